"""Federation across organisations: sites (their own Ray clusters) reached over gRPC with mutual TLS.

`agent` serves a site's clients (`fedray site serve`), `transport` reaches them from
the server (`GrpcTransport`), `wire` is what crosses the network, `ca` makes the
federation's certificates (`fedray ca`). docs/guides/sites.md is the deployment guide.
"""
