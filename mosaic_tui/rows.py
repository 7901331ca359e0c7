"""The table's row order: the shown agents' ids, sorted, kept up to date one agent at a time.

``SortedRows`` holds ``(sort key, agent id)`` pairs in ascending order. Changing one agent's key
moves only that agent (``bisect`` out, ``insort`` in: O(log n) to find, one ``memmove``); a new
sort column or filter rebuilds once. A descending view reads the same list from the end, so
reversing the order costs nothing. Pure data: no Textual, tested without a screen.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from typing import Any

Key = tuple[Any, str]


class SortedRows:
    def __init__(self) -> None:
        self._order: list[Key] = []
        self._keys: dict[str, Key] = {}
        self.version = 0
        """Bumped whenever the order (or the set of rows) changes."""

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._keys

    def rebuild(self, items: Iterable[tuple[str, Any]]) -> None:
        """All rows at once: ``(agent id, sort value)`` pairs (a new sort column or filter).

        A column's sort values must compare with each other (the book's columns give numbers,
        strings, datetimes or tuples of them, never None)."""
        self._keys = {agent_id: (value, agent_id) for agent_id, value in items}
        self._order = sorted(self._keys.values())
        self.version += 1

    def place(self, agent_id: str, value: Any) -> bool:
        """Show ``agent_id`` at the place its sort ``value`` gives; answers if the order moved."""
        key = (value, agent_id)
        old = self._keys.get(agent_id)
        if old == key:
            return False
        if old is not None:
            del self._order[self._find(old)]
        insort(self._order, key)
        self._keys[agent_id] = key
        self.version += 1
        return True

    def remove(self, agent_id: str) -> bool:
        old = self._keys.pop(agent_id, None)
        if old is None:
            return False
        del self._order[self._find(old)]
        self.version += 1
        return True

    def _find(self, key: Key) -> int:
        index = bisect_left(self._order, key)
        if index >= len(self._order) or self._order[index] != key:  # pragma: no cover - guard
            raise KeyError(key[1])
        return index

    def at(self, index: int, *, descending: bool) -> str:
        """The agent id shown at row ``index`` (0 is the top row)."""
        position = len(self._order) - 1 - index if descending else index
        return self._order[position][1]

    def index(self, agent_id: str, *, descending: bool) -> int | None:
        """The row ``agent_id`` is shown at, or None if it is not shown (O(log n))."""
        key = self._keys.get(agent_id)
        if key is None:
            return None
        position = self._find(key)
        return len(self._order) - 1 - position if descending else position

    def ids(self, *, descending: bool) -> list[str]:
        ids = [agent_id for _, agent_id in self._order]
        if descending:
            ids.reverse()
        return ids
