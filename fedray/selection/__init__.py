"""Client selection: which clients train in a round. Importing this registers the selectors."""

from fedray.selection import random as _random  # noqa: F401  (registers 'random')
from fedray.selection.base import SELECTORS, Selector, SelectionRequest

__all__ = ["SELECTORS", "Selector", "SelectionRequest"]
