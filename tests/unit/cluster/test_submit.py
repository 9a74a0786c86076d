"""Job submission pieces that need no cluster: address, token, runtime env, entrypoint."""

import shlex
from pathlib import Path

import pytest

from fedray.cluster.errors import ClusterError
from fedray.cluster.submit import (
    SubmitOptions, auth_headers, auth_token, connect, dashboard_address, entrypoint, parse_env, runtime_env,
)
from fedray.config import load_config
from tests.conftest import REPO


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # Path.home(): no ~/.ray/auth_token here
    return monkeypatch


@pytest.mark.parametrize(
    "given, env, expected",
    [
        ("http://head:8265", {}, "http://head:8265"),
        ("head:8265", {}, "http://head:8265"),
        (None, {"RAY_API_SERVER_ADDRESS": "http://a:1"}, "http://a:1"),
        (None, {"RAY_ADDRESS": "http://b:2"}, "http://b:2"),
        (None, {"RAY_ADDRESS": "10.0.0.1:6379"}, "http://127.0.0.1:8265"),  # a GCS address is not the dashboard
        (None, {}, "http://127.0.0.1:8265"),
    ],
)
def test_dashboard_address(clean_env, given, env, expected):
    for k, v in env.items():
        clean_env.setenv(k, v)
    assert dashboard_address(given) == expected


def test_token_is_found_where_ray_looks_in_ray_order(clean_env, tmp_path):
    assert auth_token() is None and auth_headers() == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert auth_headers() == {"Authorization": "Bearer from-home"}
    named = tmp_path / "token"
    named.write_text("from-path")
    clean_env.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    assert auth_token() == "from-path"
    clean_env.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_token() == "from-env"


def test_an_unreadable_token_path_is_an_error(clean_env, tmp_path):
    clean_env.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ClusterError, match="RAY_AUTH_TOKEN_PATH=.*missing cannot be read"):
        auth_token()


def options(working_dir, **kw):
    return SubmitOptions(address="http://h:8265", working_dir=Path(working_dir), **kw)


def test_runtime_env_uploads_the_working_dir_and_ships_fedray_when_outside_it(tmp_path):
    cfg = load_config(None, ["output_dir=runs"])
    inside = runtime_env(cfg, options(REPO, env_vars={"A": "1"}, pip=("pandas",)))
    assert inside["working_dir"] == str(Path(REPO).resolve())
    assert "py_modules" not in inside  # fedray/ travels inside the working directory
    # `ray job stop` gives the run time to finish its round (Ray's default is 3 s)
    assert inside["env_vars"] == {"A": "1", "RAY_JOB_STOP_WAIT_TIME_S": "660"} and inside["pip"] == ["pandas"]
    assert "runs" in inside["excludes"] and ".git" in inside["excludes"]
    elsewhere = runtime_env(load_config(None, ["output_dir=s3://b/runs"]), options(tmp_path))
    assert elsewhere["py_modules"] == [str(Path(REPO, "fedray").resolve())]
    assert "s3://b/runs" not in elsewhere["excludes"] and "pip" not in elsewhere


def test_entrypoint_runs_the_config_relative_to_the_working_dir(tmp_path):
    config = tmp_path / "exp" / "c.yaml"
    config.parent.mkdir()
    config.write_text("{}")
    command = entrypoint(str(config), ["server.rounds=2", "model.hidden=[32, 32]"], options(tmp_path))
    assert shlex.split(command) == ["python", "-m", "fedray", "run", "exp/c.yaml", "server.rounds=2",
                                    "model.hidden=[32, 32]"]
    with pytest.raises(ClusterError, match="outside the working directory"):
        entrypoint(str(config), [], options(tmp_path / "exp" / "sub"))


def test_parse_env(monkeypatch):
    monkeypatch.setenv("FEDRAY_TEST_VAR", "x y")
    assert parse_env(["A=1", "B=", "FEDRAY_TEST_VAR"]) == {"A": "1", "B": "", "FEDRAY_TEST_VAR": "x y"}
    monkeypatch.delenv("FEDRAY_TEST_VAR")
    with pytest.raises(ClusterError, match="--env FEDRAY_TEST_VAR: not set"):
        parse_env(["FEDRAY_TEST_VAR"])


def test_an_unreachable_dashboard_is_named():
    with pytest.raises(ClusterError, match="cannot reach the Ray dashboard at http://127.0.0.1:9"):
        connect("http://127.0.0.1:9")


@pytest.mark.parametrize("address", ["notaurl:xx", "http://[::1", "ftp://head:8265", "http://:8265"])
def test_an_address_that_is_not_a_dashboard_url_is_one_error(clean_env, address):
    with pytest.raises(ClusterError, match="not a Ray dashboard address; give http://HOST:PORT"):
        dashboard_address(address)


class _DashboardWithoutAgent:
    """Answers `submit_job` as the Job SDK does when the head's dashboard agent is not up."""

    def submit_job(self, **job):
        raise RuntimeError("Request failed with status code 500: No available agent to submit job, "
                           "please try again later.")


def test_a_dashboard_without_its_job_agent_points_to_the_agent_log(tmp_path):
    from fedray.cluster.submit import submit_run

    config = tmp_path / "exp.yaml"
    config.write_text("{}\n")
    with pytest.raises(ClusterError, match=r"no job agent to run the job .*dashboard_agent\.log"):
        submit_run(_DashboardWithoutAgent(), load_config(None, []), str(config), [], options(tmp_path))
