"""One registry shape for everything lampbox finds by name: methods, backends, retrievers and
training objectives (docs/architecture.md, "Plugins").

A `Registry` maps a name to a target: the object itself, or "package.module:attribute",
imported only when the name is chosen (so registering a backend imports neither torch nor
llama_cpp). One rule for duplicates: registering a name that is taken is an error naming both
registrants, unless the call says `replace=True`.

Third-party packages add names through Python entry points, one group per registry
(`lampbox.backends`, `lampbox.retrievers`, `lampbox.methods`, `lampbox.objectives`), the way
llm and harlequin take their plugins. The group is read at the registry's first lookup, not at
import; a plugin is imported only when its name is chosen. A plugin that cannot be read or
that takes a name already registered is one warning line on the `lampbox` logger naming the
entry point, and is left out; one that fails to import when chosen is one LampboxError naming
it. Nothing else breaks.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from lampbox.errors import LampboxError, UnknownNameError

T = TypeVar("T")
ENTRY_POINT_PREFIX = "lampbox."  # + the registry's plural: lampbox.backends, lampbox.methods, ...
log = logging.getLogger("lampbox")


class DuplicateNameError(LampboxError, ValueError):
    """A name registered twice without replace=True."""


@dataclass(frozen=True)
class Registration:
    """One name: its target (an object, or "module:attribute" imported when first chosen),
    a one-line description and who registered it (for messages)."""

    name: str
    target: Any
    description: str = ""
    origin: str = ""
    data: Any = None  # what the registry keeps beside the target (say, an option's name)


def describe_target(target: Any) -> str:
    """"module:attribute" for a lazy target, the object's module and name otherwise."""
    if isinstance(target, str):
        return target
    owner = target if isinstance(target, type) or callable(target) else type(target)
    module = getattr(owner, "__module__", "?")
    return f"{module}:{getattr(owner, '__qualname__', type(owner).__name__)}"


def import_target(target: str) -> Any:
    """The attribute a "package.module:attribute" string names (dots after the colon walk
    attributes)."""
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{target!r} is not 'package.module:attribute'")
    value: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


class Registry(Generic[T]):
    """Names -> targets of one kind ("backend", "method", ...), with its entry-point group.

    `resolve(name, target)` turns a loaded target into what `get` returns (say, an instance
    from a class) and raises TypeError/ValueError for a target of the wrong shape; what `get`
    returns is kept, so each name imports at most once. A registry without `plural` takes no
    plugins.
    """

    def __init__(self, kind: str, plural: str | None, resolve: Callable[[str, Any], T] | None = None) -> None:
        self.kind = kind
        self.group = ENTRY_POINT_PREFIX + plural if plural else None
        self._resolve = resolve
        self._entries: dict[str, Registration] = {}
        self._loaded: dict[str, T] = {}
        self._plugins_read = False
        self._lock = threading.RLock()

    # -- registering -------------------------------------------------------------------------

    def register(
        self,
        name: str,
        target: Any,
        *,
        description: str = "",
        replace: bool = False,
        origin: str = "",
        data: Any = None,
    ) -> None:
        """Make `target` available as `name`; a taken name is a DuplicateNameError naming both
        registrants unless `replace`."""
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.kind} needs a name")
        registration = Registration(name, target, description, origin or describe_target(target), data)
        with self._lock:
            existing = self._entries.get(name)
            if existing is not None and not replace:
                raise DuplicateNameError(
                    f"{self.kind} {name!r} is already registered by {existing.origin}; "
                    f"{registration.origin} registers it too (pass replace=True to replace it)"
                )
            self._entries[name] = registration
            self._loaded.pop(name, None)

    def unregister(self, name: str) -> None:
        """Forget a name (no error when it is not there)."""
        with self._lock:
            self._entries.pop(name, None)
            self._loaded.pop(name, None)

    # -- looking up --------------------------------------------------------------------------

    def names(self) -> list[str]:
        self._read_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._read_plugins()
        return name in self._entries

    def registration(self, name: str) -> Registration:
        """The registration of a name; unknown names suggest the closest."""
        self._read_plugins()
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownNameError(self.kind, name, self.names())
        return entry

    def descriptions(self) -> dict[str, str]:
        return {name: self._entries[name].description for name in self.names()}

    def get(self, name: str) -> T:
        """What `name` stands for, its module imported on first use."""
        entry = self.registration(name)
        with self._lock:
            if name in self._loaded and self._entries.get(name) is entry:
                return self._loaded[name]
        target = entry.target
        plugin = _is_entry_point(target)
        try:
            if isinstance(target, str):
                target = import_target(target)
            elif plugin:
                target = target.load()
            value = self._resolve(name, target) if self._resolve is not None else target
        except Exception as error:
            if not plugin:
                raise
            raise LampboxError(
                f"{self.kind} {name!r} ({entry.origin}) could not be loaded: {type(error).__name__}: {error}"
            ) from error
        with self._lock:
            if self._entries.get(name) is entry:
                self._loaded[name] = value
        return value

    # -- plugins -----------------------------------------------------------------------------

    def _read_plugins(self) -> None:
        """Register this group's entry points (once, at the first lookup)."""
        if self._plugins_read:
            return
        with self._lock:
            if self._plugins_read:
                return
            self._plugins_read = True
            for entry_point in plugin_entry_points(self.group) if self.group else []:
                origin = f"entry point {entry_point.name} = {entry_point.value} in [{self.group}]{_distribution(entry_point)}"
                if ":" not in entry_point.value:
                    log.warning("lampbox: plugin %s left out: its value is not 'package.module:attribute'", origin)
                    continue
                existing = self._entries.get(entry_point.name)
                if existing is not None and existing.origin == origin:
                    continue  # read before (reread_plugins)
                try:
                    self.register(entry_point.name, entry_point, origin=origin)
                except ValueError as error:  # a taken name (DuplicateNameError), an empty one
                    log.warning("lampbox: plugin left out: %s", error)

    def reread_plugins(self) -> None:
        """Read the entry points again at the next lookup (tests; a package installed since).
        Names registered by earlier reads stay."""
        with self._lock:
            self._plugins_read = False


def plugin_entry_points(group: str) -> list[Any]:
    """The installed entry points of a group; unreadable metadata is one warning, not a crash."""
    from importlib import metadata

    try:
        return list(metadata.entry_points(group=group))
    except Exception as error:  # a broken installed distribution must not break lampbox
        log.warning("lampbox: could not read the %s plugins: %s: %s", group, type(error).__name__, error)
        return []


def _is_entry_point(target: Any) -> bool:
    return type(target).__name__ == "EntryPoint" and hasattr(target, "load")


def _distribution(entry_point: Any) -> str:
    """" (package NAME VERSION)" of an entry point's distribution, when known."""
    dist = getattr(entry_point, "dist", None)
    name = getattr(dist, "name", None)
    if not name:
        return ""
    version = getattr(dist, "version", "")
    return f" (package {name} {version})" if version else f" (package {name})"
