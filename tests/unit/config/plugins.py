"""User code for the registry tests: what a dotted path in a config may and may not reach."""

from os import system  # noqa: F401  (re-exported: `plugins:system` must still be refused)
from shutil import rmtree  # noqa: F401  (likewise: a Python function of the standard library)

SEP = "/"


def join(a: str, b: str) -> str:
    return f"{a}/{b}"


def no_arguments() -> int:
    return 0


def returns_text(cfg: object) -> str:
    return "text"


def fails(cfg: object) -> int:
    raise ValueError("Expecting value")


def one_argument(obj: object) -> int:
    return 1


class Weiszfeld:
    """An aggregator without `result`."""

    def __init__(self, num_params: int):
        self.num_params = num_params
        self.num_added = 0

    def init(self):
        return ()

    def reset(self, state=()):
        pass

    def add(self, client_id, weight, update):
        pass


def text() -> str:
    return "text"
