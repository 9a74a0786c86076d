"""Client selection: which clients train in a round. Importing this registers the selectors."""

from fedray.selection import deadline as _deadline  # noqa: F401  (registers 'deadline')
from fedray.selection import oort as _oort  # noqa: F401  (registers 'oort')
from fedray.selection import pareto as _pareto  # noqa: F401  (registers 'pareto')
from fedray.selection import poisson as _poisson  # noqa: F401  (registers 'poisson')
from fedray.selection import power_of_choice as _power_of_choice  # noqa: F401
from fedray.selection import random as _random  # noqa: F401  (registers 'random')
from fedray.selection.base import SELECTORS, Selector, SelectionRequest
from fedray.selection.profiles import ClientProfiles, Outcome, clients_table

__all__ = ["SELECTORS", "ClientProfiles", "Outcome", "Selector", "SelectionRequest", "clients_table"]
