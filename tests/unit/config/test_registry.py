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


def test_dotted_path_reaches_user_code():
    reg = Registry("thing")
    assert reg.get("os.path:join")("a", "b") == "a/b"
    with pytest.raises(ValueError, match="Cannot load thing from 'os.path:nope'"):
        reg.get("os.path:nope")


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


@pytest.mark.parametrize("path, message", [
    ("os:getcwd", r"strategy 'os:getcwd': cannot be called with 1 positional argument"),
    ("os:sep", r"strategy 'os:sep' is a str, not a callable builder"),
    ("builtins:len", r"strategy 'builtins:len': unknown argument 'mu' \(it takes: obj\)"),
    ("builtins:str", r"strategy 'builtins:str' returned a str, expected int"),
    ("json:loads", r"strategy 'json:loads' failed: JSONDecodeError: Expecting value"),
])
def test_a_dotted_path_to_the_wrong_kind_of_object_is_a_clear_error(path, message):
    reg = Registry("strategy", returns=int)
    kwargs = {"mu": 1} if path == "builtins:len" else {}
    with pytest.raises(ValueError, match=message):
        reg.build(path, "cfg", **kwargs)


def test_components_name_their_config_key():
    from fedray.config.schema import ComponentConfig

    reg = Registry("aggregator")
    reg.register("median")(lambda num_params: num_params)
    with pytest.raises(ValueError, match=r"^server.aggregator: aggregator 'median': unknown argument 'tau'"):
        reg.build_component("server.aggregator", ComponentConfig("median", {"tau": 1}), 4)
    assert reg.build_component("server.aggregator", ComponentConfig("median"), 4) == 4
