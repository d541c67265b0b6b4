"""A name -> entry registry shared by cells and tasks.

Entries are registered once, by name, next to their definition; lookups of an unknown name
raise an error that lists the closest names and every known name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(LookupError, ValueError):
    """Raised for a name that is not registered; the message lists the known names."""


class Registry(Generic[T]):
    """Entries of one kind (`kind` is used in messages, e.g. "cell" or "task")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if not name or name != name.strip() or " " in name:
            raise ValueError(f"{self.kind} name must be a non-empty word, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> T:
        """Unregister `name` (for entries registered for a while, e.g. by a test)."""
        self.get(name)
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(self.names())}."

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return (self._entries[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._entries)
