"""`fedray site serve SITE.yaml` and `fedray ca init DIR` / `fedray ca issue NAME --role server|site`."""

from __future__ import annotations

import argparse
import sys

from fedray.config.errors import ConfigError


def add_parser(sub) -> None:
    """`fedray site ...` and `fedray ca ...` under the main parser's subcommands."""
    site = sub.add_parser("site", help="serve one site's clients of a federation (its own Ray cluster)")
    actions = site.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="host the site's clients and answer the federation server")
    serve.add_argument("config", metavar="SITE.yaml", help="the site's YAML (docs/guides/sites.md)")
    ca = sub.add_parser("ca", help="the federation's certificate authority")
    ca_actions = ca.add_subparsers(dest="action", required=True)
    init = ca_actions.add_parser("init", help="create the federation CA in a folder")
    init.add_argument("folder", metavar="DIR", help="folder for ca.pem and ca.key (keep ca.key private)")
    issue = ca_actions.add_parser("issue", help="issue a party's certificate and key")
    issue.add_argument("name", metavar="NAME", help="the party's name: a site's federation.sites[].name, or the server's")
    issue.add_argument("--role", required=True, choices=["server", "site"], help="what the party is")
    issue.add_argument("--ca", default="ca", metavar="DIR", help="the CA folder (default ca)")
    issue.add_argument("--out", metavar="DIR", help="where NAME.pem and NAME.key go (default: the CA folder)")


def site_command(args: argparse.Namespace) -> int:
    from fedray.launcher import prepare
    from fedray.sites.agent import serve, site_run_config
    from fedray.sites.config import load_site_config

    site = load_site_config(args.config)
    cfg = site_run_config(site)
    dataset = prepare(cfg, site.run, local=False).dataset  # every config problem, before Ray starts
    serve(site, cfg, dataset, say=lambda line: print(line, flush=True))
    return 0


def ca_command(args: argparse.Namespace) -> int:
    from fedray.sites import ca

    try:
        if args.action == "init":
            print(f"federation CA: {ca.init_ca(args.folder)} (keep {args.folder}/ca.key private)")
        else:
            cert, key = ca.issue(args.ca, args.name, args.role, args.out)
            print(f"{args.role} {args.name}: {cert} and {key}")
    except ValueError as err:
        raise ConfigError([f"fedray ca {args.action}: {err}"]) from None
    sys.stdout.flush()
    return 0
