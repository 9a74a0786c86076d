"""Server strategies: aggregators, objective terms, named algorithms, exchanges.

Importing the package registers every built-in aggregator (the streaming ones and
the robust ones) so that `server.aggregator.name` finds them.
"""

from fedray.strategy import aggregate, robust  # noqa: F401  (registers the aggregators)
