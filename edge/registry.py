"""One registry helper for every kind of named builder: models, losses, teachers, detectors.

Shaped like torchvision ``models/_api.py``: a name maps to a builder, a duplicate name is a
programming error raised at import time, and an unknown name is a user error whose message lists
the known names. Each kind gets its own ``Registry`` instance, never a copy of this code. It lives in
``edge/`` (torch-free) so the device's detectors and the trainer's models share it.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from edge.errors import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError, ValueError):
    """A name was asked of a registry that does not hold it.

    A ``ConfigError`` so the CLI reports it with exit code 2, and a ``ValueError`` so callers
    that follow the torchvision convention can catch it as such.
    """


class Registry(Generic[T]):
    """Names mapped to builders (or plain objects) of one kind.

    Args:
        kind: what the entries are ("model", "loss", "teacher"), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Return a decorator that stores its argument under ``name`` (default: ``__name__``).

        Raises:
            ValueError: ``name`` is already registered (two builders would silently shadow).
        """

        def wrap(entry: T) -> T:
            key = name or getattr(entry, "__name__", None)
            if not key:
                raise ValueError(f"a {self.kind} registered without a name needs a __name__")
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = entry
            return entry

        return wrap

    def get(self, name: str) -> T:
        """Return the entry stored under ``name``.

        Raises:
            UnknownNameError: no such name; the message lists the known ones.
        """
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none registered)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, **kwargs: Any) -> Any:
        """Call the builder registered as ``name`` with ``kwargs`` and return its result."""
        builder = self.get(name)
        return builder(**kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
