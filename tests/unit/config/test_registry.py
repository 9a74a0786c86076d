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
