"""`fedper`: personal layers, named by pattern, stay on the client (Arivazhagan et al. 2019).

The layers whose names match `patterns` (usually the head) never travel: the
exchange leaves them out, each client trains its own copy from its kept state, and
the server's model keeps the initial one. Everything else is FedAvg's.
"""

from __future__ import annotations

from typing import List

from fedray.personalization.base import PERSONALIZATIONS, Personalization, matching, pattern_problems


def layer_names(patterns: List[str]):
    """`local(model)`: the travelling tensors matching `patterns`."""
    def local(model) -> frozenset[str]:
        from fedray.models.flat import travelling

        return matching(list(travelling(model)), patterns)

    return local


@PERSONALIZATIONS.register("fedper")
def fedper(patterns: List[str]) -> Personalization:
    """Keep the layers matching `patterns` (shell-style on parameter names, a module
    prefix such as `2` or `head` included) personal; share the rest."""
    patterns = list(patterns)
    return Personalization(
        "fedper", local=layer_names(patterns),
        layer_problems=lambda names: pattern_problems("clients.personalization.args.patterns", patterns,
                                                      names, "fedper"))
