"""`fedray ca` and `fedray site serve`: certificates that say who is who, and bad input as exit 2."""

from __future__ import annotations

import pytest

from fedray.cli.main import main
from fedray.sites.ca import identity


def test_ca_init_and_issue_make_certificates_that_name_the_party_and_its_role(tmp_path, capsys):
    assert main(["ca", "init", str(tmp_path / "ca")]) == 0
    assert main(["ca", "issue", "site-a", "--role", "site", "--ca", str(tmp_path / "ca"), "--out",
                 str(tmp_path / "a")]) == 0
    assert identity((tmp_path / "a" / "site-a.pem").read_bytes()) == ("site-a", "site")
    assert (tmp_path / "a" / "site-a.key").stat().st_mode & 0o077 == 0  # the key is its owner's only
    assert "site site-a" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["ca", "init", "{ca}"], "exists: a federation has one CA"),
    (["ca", "issue", "Site_A", "--role", "site", "--ca", "{ca}"], "'Site_A' is not a party name"),
    (["ca", "issue", "site-a", "--role", "site", "--ca", "{missing}"], "no federation CA in"),
])
def test_ca_mistakes_exit_2_with_the_reason(tmp_path, capsys, argv, message):
    assert main(["ca", "init", str(tmp_path / "ca")]) == 0
    argv = [a.format(ca=tmp_path / "ca", missing=tmp_path / "nowhere") for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("name: a\nrun: x.yaml\nlisten: 127.0.0.1:1\ntls: {ca: c, cert: c, key: k}\nport: 3\n", "port"),
    ("name: a\nrun: x.yaml\nlisten: 1\n", "listen must be host:port"),
    ("name: a\nlisten: 127.0.0.1:1\ntls: {ca: c, cert: c, key: k}\n", "run is empty"),
    ("name: a\nrun: x.yaml\n", "tls needs tls.ca, tls.cert, tls.key"),
])
def test_a_bad_site_config_exits_2_naming_the_key(tmp_path, capsys, text, message):
    (tmp_path / "site.yaml").write_text(text)
    assert main(["site", "serve", str(tmp_path / "site.yaml")]) == 2
    err = capsys.readouterr().err
    assert message in err and "site.yaml" in err


def test_a_site_not_in_the_experiment_exits_2(tmp_path, capsys):
    (tmp_path / "x.yaml").write_text("name: x\n")
    (tmp_path / "site.yaml").write_text("name: a\nrun: x.yaml\ntls: {ca: c, cert: c, key: k}\n")
    assert main(["site", "serve", str(tmp_path / "site.yaml")]) == 2
    assert "site 'a' is not in federation.sites of" in capsys.readouterr().err
