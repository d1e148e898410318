"""Name -> object tables with one error type that lists the valid names.

Every registry in stlib (models, neurons, surrogates, encodings, datasets, ...) is a
:class:`Registry`. Looking up a bad name raises :class:`UnknownNameError`, which names the
bad value, the closest valid names and every valid name, so a typo in a YAML file or a
notebook parameter is one readable line, not a ``KeyError`` far from the cause.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that is not in a registry (or a config key that is not in a schema)."""

    def __init__(self, kind: str, name: object, valid: Iterable[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        near = difflib.get_close_matches(str(name), self.valid, n=3, cutoff=0.5)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        super().__init__(f"unknown {kind} {name!r}{hint} valid: {', '.join(self.valid)}")


def init_keywords(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` accepts: its ``__init__``'s, and, where that takes
    ``**kwargs``, those of the parents it passes them on to (up the MRO, to the first
    ``__init__`` without ``**kwargs``)."""
    accepted: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        accepted |= {p.name for p in params
                     if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return accepted


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The closest valid name to ``name`` (case-insensitive), or None."""
    valid = list(valid)
    lowered = {v.lower(): v for v in valid}
    near = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[near[0]] if near else None


class Registry(Generic[T]):
    """A table of named entries with optional aliases.

    ``kind`` is used in error messages ("unknown neuron 'LIFF'; did you mean 'LIF'? ...").
    Lookups are exact first, then case-insensitive, so ``lif`` finds ``LIF``.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str | None = None, *, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        """Decorator: ``@REG.register()`` uses the object's ``__name__``."""

        def add(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._entries or key in self._aliases:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = obj
            for alias in aliases:
                if alias in self._entries or alias in self._aliases:
                    raise ValueError(f"{self.kind} alias {alias!r} is registered twice")
                self._aliases[alias] = key
            return obj

        return add

    def add(self, name: str, obj: T, *, aliases: Iterable[str] = ()) -> T:
        return self.register(name, aliases=aliases)(obj)

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases (case-insensitive)."""
        if not isinstance(name, str):
            raise UnknownNameError(self.kind, name, self.valid_names())
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        folded = {k.lower(): k for k in self._entries}
        folded.update({a.lower(): k for a, k in self._aliases.items()})
        if name.lower() in folded:
            return folded[name.lower()]
        raise UnknownNameError(self.kind, name, self.valid_names())

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)]

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names (not aliases) matching a shell-style wildcard."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def valid_names(self) -> list[str]:
        """Registered names and aliases, for error messages."""
        return sorted({*self._entries, *self._aliases})

    def __contains__(self, name: object) -> bool:
        try:
            self.canonical(name)  # type: ignore[arg-type]
        except UnknownNameError:
            return False
        return True

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
