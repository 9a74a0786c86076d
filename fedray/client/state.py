"""State a client keeps between its rounds, stored by client id, not by actor.

With `placement: pool` one actor simulates many clients; anything that must
survive between a client's rounds (optimizer moments, error-feedback residuals,
personal layers) lives here under the client's id so clients never share it.
"""

from __future__ import annotations

from typing import Any

from fedray.types import ClientId


class ClientStateStore:
    """A dict of dicts: `store[client_id][key]`."""

    def __init__(self, states: dict[ClientId, dict[str, Any]] | None = None) -> None:
        self._states: dict[ClientId, dict[str, Any]] = {c: dict(s) for c, s in (states or {}).items()}

    def get(self, client_id: ClientId, key: str, default: Any = None) -> Any:
        return self._states.get(client_id, {}).get(key, default)

    def put(self, client_id: ClientId, key: str, value: Any) -> None:
        if value is None:
            self._states.get(client_id, {}).pop(key, None)
        else:
            self._states.setdefault(client_id, {})[key] = value

    def clients(self) -> list[ClientId]:
        return sorted(self._states)

    def export(self) -> dict[ClientId, dict[str, Any]]:
        return {c: dict(s) for c, s in self._states.items() if s}
