"""Which boards the demo keeps in memory: at most ``limit``, idle ones evicted (demo.md M1-M3).

A board (a ``DemoAgent`` name) is admitted when a WebSocket handshake for it arrives, and
the decision is taken and reserved before anything awaits: a board in memory takes one
more client; a new one needs a free place, made by evicting idle boards when there is
none, or the handshake is refused. Idle boards are also evicted every so often, so
memory follows use. The engine says which boards are idle: no client, no live workflow
run, no callback to deliver (``Core.evict_idle_agents``); boards with a connection
being served here are never evicted, even before the engine has seen the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import trio

__all__ = ["Boards"]

Evict = Callable[[Collection[str]], set[str]]  # keep -> the names still live


class Boards:
    """The live boards and their connections; ``enter``/``leave`` around each connection."""

    def __init__(self, evict: Evict, limit: int) -> None:
        self._evict = evict
        self.limit = limit
        self._clients: dict[str, int] = {}  # board -> connections being served
        self._live: set[str] = set()  # boards in memory, as of the last sweep, plus new ones

    @property
    def clients(self) -> int:
        return sum(self._clients.values())

    @property
    def live(self) -> frozenset[str]:
        return frozenset(self._live)

    def enter(self, name: str) -> bool:
        """Admit one connection to board ``name``; False if ``limit`` boards are in use."""
        if name not in self._live and len(self._live) >= self.limit:
            self.sweep()
            if len(self._live) >= self.limit:
                return False
        self._live.add(name)
        self._clients[name] = self._clients.get(name, 0) + 1
        return True

    def leave(self, name: str) -> None:
        """One connection to ``name`` ended (its board stays in memory until evicted)."""
        if self._clients[name] > 1:
            self._clients[name] -= 1
        else:
            del self._clients[name]

    def sweep(self) -> set[str]:
        """Evict every idle board; the names evicted."""
        still = self._evict(self._clients.keys()) | self._clients.keys()
        evicted = self._live - still
        self._live = still
        return evicted

    async def sweep_every(self, seconds: float) -> None:
        """Sweep forever, every ``seconds`` (run it in a nursery)."""
        while True:
            await trio.sleep(seconds)
            self.sweep()
