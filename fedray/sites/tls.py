"""gRPC credentials from a party's TLS files: mutual TLS only, the federation CA as the only root."""

from __future__ import annotations

from fedray.config.errors import ConfigError
from fedray.config.federation import TlsConfig


def _read(tls: TlsConfig, where: str) -> tuple[bytes, bytes, bytes]:
    out = []
    for key in ("ca", "cert", "key"):
        path = getattr(tls, key)
        try:
            with open(path, "rb") as f:
                out.append(f.read())
        except OSError as err:
            raise ConfigError([f"{where}.{key}: cannot read {path} ({err.strerror})"]) from None
    return out[0], out[1], out[2]


def server_credentials(tls: TlsConfig, where: str = "tls"):
    """A site's listening credentials: its certificate, and peers must present one the CA signed."""
    import grpc

    ca, cert, key = _read(tls, where)
    return grpc.ssl_server_credentials(((key, cert),), root_certificates=ca, require_client_auth=True)


def channel_credentials(tls: TlsConfig, where: str = "federation.tls"):
    """The server's dialling credentials: its certificate, and the site's must be the CA's."""
    import grpc

    ca, cert, key = _read(tls, where)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
