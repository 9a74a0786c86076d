"""Who may talk to whom: mutual TLS with the federation CA, names, roles and clients checked on both sides.

A site agent here serves from a stand-in pool (the refusals come before any client
is reached); the server side is the real `GrpcTransport` over loopback gRPC.
"""

from __future__ import annotations

import socket
from concurrent import futures

import grpc
import pytest
import yaml

from fedray.config import load_config
from fedray.config.errors import ConfigError
from fedray.config.federation import TlsConfig
from fedray.sites import ca
from fedray.sites.agent import SiteAgent, listen
from fedray.sites.config import SiteAgentConfig
from fedray.sites.link import SiteRefused
from fedray.sites.tls import server_credentials
from fedray.sites.transport import GrpcTransport
from fedray.sites.wire import METHOD, wire_types

SITES = {"site-a": [0, 2], "site-b": [1, 3]}


class DescribedPool:
    """What a site's pool says of itself at hello; the refusals tested never reach a client."""

    def describe(self) -> list[dict]:
        return []


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca.init_ca(root / "ca")
    ca.init_ca(root / "rogue")
    for name, role in (("server", "server"), ("site-a", "site"), ("site-b", "site")):
        ca.issue(root / "ca", name, role)
    ca.issue(root / "rogue", "site-a", "site")
    return root


def tls(pki, name, authority="ca") -> TlsConfig:
    return TlsConfig(str(pki / authority / "ca.pem"), str(pki / authority / f"{name}.pem"),
                     str(pki / authority / f"{name}.key"))


def experiment(pki, tmp_path, sites=SITES, server="server"):
    ports = {name: _port() for name in sites}
    fed = {"sites": [{"name": n, "address": f"127.0.0.1:{ports[n]}", "clients": c} for n, c in sites.items()],
           "tls": vars(tls(pki, server)), "connect_timeout_s": 20}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({"clients": {"num_clients": 4, "placement": "pool", "pool_size": 2},
                                    "server": {"clients_per_round": 4}, "federation": fed}))
    return load_config(path), ports


def start_site(cfg, port, name, tls_files, tmp_path, said):
    site = SiteAgentConfig(name=name, run="experiment.yaml", tls=tls_files, state_dir=str(tmp_path / name))
    agent = SiteAgent(site, cfg, DescribedPool(), wire_types(), said.append)
    server, _ = listen(agent, f"127.0.0.1:{port}", server_credentials(tls_files))
    return server


@pytest.fixture
def said():
    return []


def test_the_server_reaches_an_enrolled_site_and_each_side_logs_the_same_digests(pki, tmp_path, said):
    cfg, ports = experiment(pki, tmp_path, {"site-a": [0, 1, 2, 3]})
    site = start_site(cfg, ports["site-a"], "site-a", tls(pki, "site-a"), tmp_path, said)
    try:
        transport = GrpcTransport(cfg, str(tmp_path / "audit.jsonl"))
        assert transport.connect() == [] and transport.links[0].up
        transport.close()
    finally:
        site.stop(None)
    assert any("the server connected" in line for line in said)


def test_a_site_with_a_certificate_from_another_ca_is_refused(pki, tmp_path, said):
    cfg, ports = experiment(pki, tmp_path, {"site-a": [0, 1, 2, 3]})
    site = start_site(cfg, ports["site-a"], "site-a", tls(pki, "site-a", "rogue"), tmp_path, said)
    try:
        with pytest.raises(SiteRefused, match="site 'site-a' .* mutual TLS handshake failed.*federation's CA"):
            GrpcTransport(cfg, str(tmp_path / "audit.jsonl")).connect()
    finally:
        site.stop(None)


def test_a_site_answering_with_another_sites_certificate_is_refused(pki, tmp_path, said):
    cfg, ports = experiment(pki, tmp_path)
    site = start_site(cfg, ports["site-a"], "site-b", tls(pki, "site-b"), tmp_path, said)  # at site-a's address
    try:
        link = GrpcTransport(cfg, str(tmp_path / "audit.jsonl")).links[0]
        with pytest.raises(SiteRefused, match="handshake failed.*for the name 'site-a'"):
            link.hello()
    finally:
        site.stop(None)


def test_a_site_refuses_calls_for_clients_that_are_not_its_own(pki, tmp_path, said):
    cfg, ports = experiment(pki, tmp_path)
    site = start_site(cfg, ports["site-a"], "site-a", tls(pki, "site-a"), tmp_path, said)
    try:
        link = GrpcTransport(cfg, str(tmp_path / "audit.jsonl")).links[0]
        link.hello()
        with pytest.raises(SiteRefused, match=r"refused: site site-a: clients \[1\] are not hosted at this site"):
            link.stage({1: None}, 5.0, 1)
    finally:
        site.stop(None)
    assert any("clients [1] are not hosted at this site" in line for line in said)


def test_a_site_refuses_a_server_whose_experiment_differs(pki, tmp_path, said):
    cfg, ports = experiment(pki, tmp_path)
    site_cfg = load_config(tmp_path / "experiment.yaml", ["seed=7"])
    site = start_site(site_cfg, ports["site-a"], "site-a", tls(pki, "site-a"), tmp_path, said)
    try:
        with pytest.raises(SiteRefused, match="experiment config differs from this site's"):
            GrpcTransport(cfg, str(tmp_path / "audit.jsonl")).links[0].hello()
    finally:
        site.stop(None)
    assert any("experiment config differs" in line for line in said)


def test_a_site_answers_only_the_server_not_another_sites_certificate(pki, tmp_path, said):
    cfg, ports = experiment(pki, tmp_path)
    site = start_site(cfg, ports["site-a"], "site-a", tls(pki, "site-a"), tmp_path, said)
    impostor, _ = experiment(pki, tmp_path, server="site-b")  # site-b's certificate dials site-a
    impostor.federation.sites[0].address = cfg.federation.sites[0].address
    try:
        with pytest.raises(SiteRefused, match="names 'site-b' \\(role 'site'\\); this site answers only the "
                                              "federation server 'server'"):
            GrpcTransport(impostor, str(tmp_path / "audit.jsonl")).links[0].hello()
    finally:
        site.stop(None)
    assert any("refused a call" in line and "'site-b'" in line for line in said)


def test_plaintext_is_refused_both_ways(pki, tmp_path, said):
    cfg, ports = experiment(pki, tmp_path)
    site = start_site(cfg, ports["site-a"], "site-a", tls(pki, "site-a"), tmp_path, said)
    try:  # a plaintext client at a site
        with grpc.insecure_channel(cfg.federation.sites[0].address) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                list(channel.stream_stream(METHOD)(iter([b"H{}"]), timeout=5))
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        site.stop(None)
    plain = grpc.server(futures.ThreadPoolExecutor(1))
    plain.add_insecure_port(cfg.federation.sites[1].address)  # a plaintext site
    plain.start()
    try:
        with pytest.raises(SiteRefused, match="site 'site-b' .* handshake failed"):
            GrpcTransport(cfg, str(tmp_path / "audit.jsonl")).links[1].hello()
    finally:
        plain.stop(None)
    with pytest.raises(ConfigError, match=r"federation.tls needs federation.tls.key: .* \(plaintext is refused\)"):
        load_config(tmp_path / "experiment.yaml", ['federation.tls.key=""'])
