import re

import pytest

from fedray.config.registry import Registry


def test_register_build_and_names():
    reg = Registry("widget")

    @reg.register("b")
    def build_b(x):
        return ("b", x)

    @reg.register("a")
    def build_a(x):
        return ("a", x)

    assert reg.names() == ["a", "b"]
    assert reg.build("b", 3) == ("b", 3)


def test_duplicate_name_raises():
    reg = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a")(lambda: 2)


def test_unknown_name_lists_choices():
    reg = Registry("selector")
    reg.register("random")(lambda: 1)
    reg.register("oort")(lambda: 2)
    with pytest.raises(ValueError, match=r"Unknown selector 'oorrt'; choose one of \['oort', 'random'\]"):
        reg.get("oorrt")


PLUGINS = "tests.unit.config.plugins"


def test_dotted_path_reaches_user_code():
    reg = Registry("thing")
    assert reg.get(f"{PLUGINS}:join")("a", "b") == "a/b"
    with pytest.raises(ValueError, match=f"Cannot load thing from '{PLUGINS}:nope'"):
        reg.get(f"{PLUGINS}:nope")


def test_arguments_are_checked_against_the_builder_signature_before_it_runs():
    reg = Registry("aggregator")
    calls = []

    @reg.register("trimmed_mean")
    def trimmed_mean(num_params: int, beta: float = 0.1, keep: bool = True):
        calls.append(beta)
        return beta

    with pytest.raises(ValueError, match=r"aggregator 'trimmed_mean': unknown argument 'betaa' "
                                         r"\(it takes: num_params, beta, keep\)"):
        reg.build("trimmed_mean", 10, betaa=0.2)
    with pytest.raises(ValueError, match="argument 'beta' must be float, got 'a lot'"):
        reg.build("trimmed_mean", 10, beta="a lot")
    with pytest.raises(ValueError, match="argument 'keep' must be bool, got 1"):
        reg.build("trimmed_mean", 10, keep=1)
    with pytest.raises(ValueError, match="needs argument 'num_params'"):
        reg.build("trimmed_mean")
    assert calls == [] and reg.build("trimmed_mean", 10, beta=1) == 1  # an int is a fine float


@pytest.mark.parametrize("attr, message", [
    ("no_arguments", r"strategy '{p}:no_arguments': cannot be called with 1 positional argument"),
    ("SEP", r"strategy '{p}:SEP' is not a factory fedray may call: it is a str, not a function or class"),
    ("one_argument", r"strategy '{p}:one_argument': unknown argument 'mu' \(it takes: obj\)"),
    ("returns_text", r"strategy '{p}:returns_text' returned a str, expected int"),
    ("fails", r"strategy '{p}:fails' failed: ValueError: Expecting value"),
])
def test_a_dotted_path_to_the_wrong_kind_of_object_is_a_clear_error(attr, message):
    reg = Registry("strategy", returns=int)
    kwargs = {"mu": 1} if attr == "one_argument" else {}
    with pytest.raises(ValueError, match=message.format(p=re.escape(PLUGINS))):
        reg.build(f"{PLUGINS}:{attr}", "cfg", **kwargs)


def test_components_name_their_config_key():
    from fedray.config.schema import ComponentConfig

    reg = Registry("aggregator")
    reg.register("median")(lambda num_params: num_params)
    with pytest.raises(ValueError, match=r"^server.aggregator: aggregator 'median': unknown argument 'tau'"):
        reg.build_component("server.aggregator", ComponentConfig("median", {"tau": 1}), 4)
    assert reg.build_component("server.aggregator", ComponentConfig("median"), 4) == 4


@pytest.mark.parametrize("path, reason", [
    ("os:system", "module 'os' is part of Python's standard library"),
    ("subprocess:run", "module 'subprocess' is part of Python's standard library"),
    ("builtins:eval", "module 'builtins' is part of Python's standard library"),
    ("os.path:join", "module 'os.path' is part of Python's standard library"),
    ("fedray.__main__:main", r"module 'fedray.__main__' is in fedray's denied set \(fedray.__main__\)"),
    ("fedray.cli.main:main", r"module 'fedray.cli.main' is in fedray's denied set \(fedray.cli\)"),
    ("torch.serialization:load", r"module 'torch.serialization' is in fedray's denied set \(torch.serialization\)"),
    (f"{PLUGINS}:system", "it is a builtin_function_or_method, not a function or class"),
    (f"{PLUGINS}:rmtree", "module 'shutil' is part of Python's standard library"),
])
def test_code_outside_what_fedray_may_call_is_refused_before_anything_runs(path, reason):
    """Refused on the module name before import (os, subprocess, fedray's CLI), or on the
    object's own module after (a user module re-exporting os.system), never called."""
    import sys

    reg = Registry("strategy")
    sys.modules.pop("fedray.__main__", None)
    with pytest.raises(ValueError, match=rf"strategy '{re.escape(path)}' is not a factory fedray may call: {reason}"):
        reg.build(path, command="touch /tmp/fedray-should-not-exist")
    assert "fedray.__main__" not in sys.modules  # refused by name: never imported


def test_a_protocol_error_names_the_missing_member():
    from fedray.strategy.aggregate import AGGREGATORS

    with pytest.raises(ValueError, match=r"returned a Weiszfeld, missing member 'result' of Aggregator"):
        AGGREGATORS.build(f"{PLUGINS}:Weiszfeld", 4)


def test_names_read_from_files_may_be_registered_names_only():
    reg = Registry("watermark scheme")
    reg.register("feature")(lambda: 1)
    assert reg.get("feature", code=False)() == 1
    with pytest.raises(ValueError, match=r"Unknown watermark scheme 'os:system'; choose one of \['feature'\]$"):
        reg.get("os:system", code=False)
