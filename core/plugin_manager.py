"""The pluggy manager: entry-point plugins, drop-in files, listing, and the registry.

Built-in plugins are declared in the `boomerang` entry-point group of `pyproject.toml` and
load exactly like third-party ones. `BOOMERANG_LOAD_PLUGINS` (comma-separated names) loads
only those entry points; `BOOMERANG_DISABLED_PLUGINS` blocks the ones named.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from boomerang import hookspecs
from boomerang.kinds import Action, Channel, PromoProvider, Recommender, Source
from boomerang.problems import Problem, ProblemError, did_you_mean
from boomerang.profiles import ADDRESS_FIELDS
from boomerang.rate_limits import LocalRateLimits, RateLimits
from boomerang.recommendations import BUILTIN

log = logging.getLogger(__name__)

LOAD_ENV = "BOOMERANG_LOAD_PLUGINS"
DISABLED_ENV = "BOOMERANG_DISABLED_PLUGINS"


@dataclass
class PluginInfo:
    """Where a loaded plugin came from, for `boomerang plugins`."""

    name: str
    key: str  # the name it is registered under in the plugin manager
    origin: str  # "package" or "file"
    package: str | None = None
    version: str | None = None
    file: str | None = None

    def hooks(self, pm: pluggy.PluginManager) -> list[str]:
        """Names of the hooks this plugin implements."""
        plugin = pm.get_plugin(self.key)
        if plugin is None:
            return []
        return sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])


@dataclass
class Plugins:
    """The plugin manager with what was loaded and what failed to load."""

    pm: pluggy.PluginManager
    infos: list[PluginInfo] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    drop_ins: dict[Path, tuple[int, int]] = field(default_factory=dict)  # as loaded: mtime, size

    @property
    def hook(self) -> Any:
        """The hook relay: `plugins.hook.register_channels(config=...)`."""
        return self.pm.hook

    def drop_ins_changed(self, plugin_dirs: Iterable[Path]) -> list[str]:
        """The drop-in files added, changed or removed since the plugins were loaded, such as
        `crm.py (added)`: a reload does not import code, so they take effect after a restart."""
        now = drop_in_files(plugin_dirs)
        changes = [
            f"{path.name} ({'added' if path not in self.drop_ins else 'changed'})"
            for path, stamp in now.items()
            if self.drop_ins.get(path) != stamp
        ]
        return changes + [f"{path.name} (removed)" for path in self.drop_ins.keys() - now.keys()]


def drop_in_files(plugin_dirs: Iterable[Path]) -> dict[Path, tuple[int, int]]:
    """The drop-in plugin files of the directories, with their modification time and size."""
    files = {}
    for directory in plugin_dirs:
        for file in sorted(Path(directory).glob("*.py")) if Path(directory).is_dir() else ():
            if not file.name.startswith("_"):
                with contextlib.suppress(OSError):  # removed meanwhile: not there
                    info = file.stat()
                    files[file.resolve()] = (info.st_mtime_ns, info.st_size)
    return files


def load_plugins(plugin_dirs: Iterable[Path] = (), *, entry_point_group: str = "boomerang") -> Plugins:
    """Load entry-point plugins, then every `*.py` in the drop-in directories.

    A broken entry-point plugin is a startup error; a broken drop-in file is reported in
    `Plugins.problems` with its file and line and left out, so the daemon keeps running.
    """
    pm = pluggy.PluginManager("boomerang")
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    allowed = _names(os.environ.get(LOAD_ENV))
    for name in _names(os.environ.get(DISABLED_ENV)) or ():
        pm.set_blocked(name)
    # A package's name and version, read once: each read parses its METADATA file again, and
    # Boomerang's own package declares a dozen plugins.
    packages: dict[Any, tuple[str | None, str | None]] = {}
    for ep in sorted(entry_points(group=entry_point_group), key=lambda ep: ep.name):
        if pm.is_blocked(ep.name) or (allowed is not None and ep.name not in allowed):
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        module = ep.load()
        dist = ep.dist
        _register(pm, module, ep.name)
        if dist is not None and dist not in packages:
            metadata = dist.metadata
            packages[dist] = (metadata["Name"], metadata["Version"])
        package, version = packages[dist] if dist is not None else (None, None)
        plugins.infos.append(PluginInfo(ep.name, ep.name, "package", package=package, version=version))
    plugin_dirs = list(plugin_dirs)
    plugins.drop_ins = drop_in_files(plugin_dirs)  # before importing: a later edit is a change
    for directory in plugin_dirs:
        _load_drop_ins(plugins, Path(directory))
    return plugins


def _names(text: str | None) -> set[str] | None:
    if text is None:
        return None
    return {name.strip() for name in text.split(",") if name.strip()}


def _register(pm: pluggy.PluginManager, module: ModuleType, name: str) -> None:
    """Register and check for misspelt hooks; on failure the plugin is left unregistered."""
    pm.register(module, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(name=name)
        hints = "".join(
            f"; '{unknown}' is not a hook{did_you_mean(unknown, HOOK_NAMES)}"
            for unknown in _unknown_hooks(module)
        )
        raise pluggy.PluginValidationError(exc.plugin, f"{exc}{hints}") from None


HOOK_NAMES = sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "boomerang_spec"))


def _unknown_hooks(module: ModuleType) -> list[str]:
    """Names of functions marked `@hookimpl` that match no hook."""
    return [
        name
        for name, value in vars(module).items()
        if hasattr(value, "boomerang_impl") and name not in HOOK_NAMES
    ]


def _load_drop_ins(plugins: Plugins, directory: Path) -> None:
    if not directory.is_dir():
        return
    for file in sorted(directory.glob("*.py")):
        if file.name.startswith("_"):
            continue
        name = str(file.resolve())
        if plugins.pm.get_plugin(name) is not None:
            continue  # the same directory listed twice
        digest = hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:8]
        module_name = f"boomerang_dropin_{file.stem}_{digest}"
        try:
            spec = importlib.util.spec_from_file_location(module_name, file)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            _register(plugins.pm, module, name)
        except Exception as exc:  # noqa: BLE001 - any error in a drop-in is reported, not fatal
            sys.modules.pop(module_name, None)
            line, col = _error_position(exc, file)
            message = f"plugin not loaded: {type(exc).__name__}: {exc}"
            plugins.problems.append(Problem(str(file), line, col, message))
            log.error("%s:%d:%d: %s", file, line, col, message)
            continue
        plugins.infos.append(PluginInfo(file.stem, name, "file", file=name))


def _error_position(exc: BaseException, file: Path) -> tuple[int, int]:
    if isinstance(exc, SyntaxError) and exc.lineno:
        return exc.lineno, exc.offset or 1
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == file]
    if frames:
        return frames[-1].lineno or 1, (frames[-1].colno or 0) + 1
    if isinstance(exc, pluggy.PluginValidationError) and isinstance(exc.plugin, ModuleType):
        for name in _unknown_hooks(exc.plugin):
            function = getattr(exc.plugin, name)
            # co_firstlineno is the decorator's line; point at the `def` itself.
            lines = file.read_text(encoding="utf-8").splitlines()
            for number in range(function.__code__.co_firstlineno, len(lines) + 1):
                if lines[number - 1].lstrip().startswith(("def ", "async def ")):
                    return number, lines[number - 1].index("def ") + 5
    return 1, 1


async def await_me_maybe(value: Any) -> Any:
    """Await `value` if it is awaitable; notification hooks may return either."""
    if inspect.isawaitable(value):
        return await value
    return value


async def notify(plugins: Plugins, hook_name: str, **kwargs: Any) -> None:
    """Call a notification hook and await every awaitable it returns; a failing plugin is logged."""
    for result in getattr(plugins.hook, hook_name)(**kwargs):
        try:
            await await_me_maybe(result)
        except Exception:
            log.exception("plugin hook %s failed", hook_name)


@dataclass
class Registry:
    """What the plugins handed over for one configuration, validated."""

    sources: dict[str, Source] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    # Every channel the plugins know, configured or not: its class (or, for a channel handed
    # over only as a configured instance, that instance), read for its declarations.
    channel_kinds: dict[str, type[Channel] | Channel] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)
    actions: dict[str, Action] = field(default_factory=dict)
    promo_providers: dict[str, PromoProvider] = field(default_factory=dict)
    recommenders: dict[str, Recommender] = field(default_factory=dict)

    async def close(self) -> None:
        """Close every source and channel (connections, pools)."""
        for item in [*self.sources.values(), *self.channels.values()]:
            try:
                await item.close()
            except Exception:
                log.exception("closing %s failed", item.name)


@dataclass(frozen=True)
class _HandedOver:
    """What one plugin's registration hook returned, and where that hook is."""

    plugin: str  # the plugin's name: its entry point, or a drop-in's file name without .py
    file: str
    line: int
    value: Any

    def problem(self, message: str) -> Problem:
        """A problem about this hand-over, at the plugin's hook in the plugin's file."""
        return Problem(self.file, self.line, 1, f"plugin '{self.plugin}': {message}")


def _plugin_name(key: str) -> str:
    """The name a plugin is known by: a drop-in is registered under its file's path."""
    return Path(key).stem if os.sep in key else key


def _where(implementation: Any) -> tuple[str, int]:
    """The file and the line of a hook implementation (its module's file if it has no code)."""
    code = getattr(implementation.function, "__code__", None)
    file = code.co_filename if code else getattr(implementation.plugin, "__file__", None)
    return str(file or implementation.plugin_name), code.co_firstlineno if code else 1


def _failure_position(exc: BaseException, file: str, line: int) -> int:
    """The line in the plugin's own file where a failing hook raised, else the hook's line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == file]
    return (frames[-1].lineno or line) if frames else line


class _Collection:
    """The hand-overs of registration hooks, with every problem found on the way."""

    def __init__(self, plugins: Plugins):
        self.plugins = plugins
        self.problems: list[Problem] = []
        self.failed: set[str] = set()  # hooks of which a plugin's call raised

    def call(self, hook: str, **kwargs: Any) -> list[_HandedOver]:
        """What each plugin's implementation of `hook` handed over, in registration order."""
        # Each plugin separately: one plugin's config error must not hide the others' objects.
        # In the order they were registered (built-ins first), so that a name taken twice is
        # blamed on the plugin that came later.
        results = []
        for implementation in getattr(self.plugins.hook, hook).get_hookimpls():
            file, line = _where(implementation)
            plugin = _plugin_name(implementation.plugin_name)
            try:
                # as pluggy does: a hook implementation declares only the arguments it uses
                value = implementation.function(*(kwargs[name] for name in implementation.argnames))
            except ProblemError as exc:
                self.problems.extend(exc.problems)
                self.failed.add(hook)
                continue
            except Exception as exc:  # noqa: BLE001 - a plugin's bug is reported, with its place
                self.failed.add(hook)
                where = _HandedOver(plugin, file, _failure_position(exc, file, line), None)
                self.problems.append(where.problem(f"{hook} failed: {type(exc).__name__}: {exc}"))
                continue
            results.append(_HandedOver(plugin, file, line, value))
        return results

    def take(
        self,
        kind: str,
        results: list[_HandedOver],
        accepts: Callable[[Any], bool],
        target: dict[str, Any],
        built_in: Collection[str] = (),
    ) -> None:
        """Put each named object handed over into `target`, unless it is invalid or its name taken
        (by another plugin's, or by one of the `built_in` names of its kind)."""
        owners: dict[str, _HandedOver] = {}
        for result in results:
            for item in result.value or ():
                name = getattr(item, "name", "")
                if not accepts(item) or not name:
                    self.problems.append(result.problem(f"handed over an invalid {kind}: {item!r}"))
                elif unknown := _unknown_address_fields(item):
                    self.problems.append(
                        result.problem(
                            f"{kind} '{name}' declares address_fields {unknown!r}: a tuple of profile"
                            f" fields ({', '.join(ADDRESS_FIELDS)})"
                        )
                    )
                elif name in built_in:
                    self.problems.append(result.problem(f"{kind} '{name}' has the name of a built-in one"))
                elif name in target:
                    taken = _also(owners[name])
                    self.problems.append(result.problem(f"duplicate {kind} name '{name}'{taken}"))
                else:
                    target[name] = item
                    owners[name] = result


def _unknown_address_fields(item: Any) -> Any:
    """What is wrong in a channel's `address_fields` (the value, or its names that are no
    profile field), or None: a field the profile lacks would silently never renew."""
    if not (isinstance(item, Channel) or _is_channel_class(item)):
        return None
    fields = item.address_fields
    if not isinstance(fields, tuple):  # ("phone") is the string "phone"
        return fields
    unknown = tuple(f for f in fields if f not in ADDRESS_FIELDS)
    return unknown or None


def _is_channel_class(item: Any) -> bool:
    return isinstance(item, type) and issubclass(item, Channel)


def channel_kinds(plugins: Plugins) -> tuple[dict[str, type[Channel]], list[Problem]]:
    """Every channel class the plugins declare (`register_channel_kinds`), configured or not, by
    name, and the problems with what they handed over, at the plugin's hook in its file."""
    collection = _Collection(plugins)
    kinds: dict[str, type[Channel]] = {}
    collection.take("channel kind", collection.call("register_channel_kinds"), _is_channel_class, kinds)
    return kinds, collection.problems


def address_fields(kinds: Mapping[str, type[Channel] | Channel]) -> dict[str, tuple[str, ...]]:
    """The profile fields each channel's address is made from (`Channel.address_fields`), by
    channel name: what the store needs to lift "known bad" on a new address."""
    return {name: tuple(kind.address_fields) for name, kind in kinds.items()}


def installed_address_fields() -> dict[str, tuple[str, ...]]:
    """`address_fields` of the channels the installed plugins declare (no drop-in directories),
    as the plugin switches in the environment select them."""
    return _installed_address_fields(os.environ.get(LOAD_ENV), os.environ.get(DISABLED_ENV))


@functools.cache
def _installed_address_fields(loaded: str | None, disabled: str | None) -> dict[str, tuple[str, ...]]:
    # Keyed by the switches load_plugins reads, so that a process whose switches change (a test
    # disabling a channel for a while) never keeps the fields of another selection.
    return address_fields(channel_kinds(load_plugins())[0])


def collect(plugins: Plugins, config: Any, rate_limits: RateLimits | None = None) -> Registry:
    """Call every registration hook for `config`; raises `ProblemError` on invalid hand-overs."""
    registry, problems = gather(plugins, config, rate_limits)
    if problems:
        raise ProblemError(problems)
    return registry


def gather(
    plugins: Plugins, config: Any, rate_limits: RateLimits | None = None
) -> tuple[Registry, list[Problem]]:
    """Call every registration hook for `config`: what was handed over, and every problem.

    Sources, channels and actions get `rate_limits`, the daemon's buckets for its database; without
    them (`check`, `simulate`, `preview`, which send nothing for real) buckets of their own.

    A problem with what a plugin handed over (an invalid object, a name taken, a hook that
    raised) names the plugin and points at its hook in the plugin's file; a plugin's own
    `ProblemError` (a wrong setting) keeps its position in the config. The registry holds all
    the rest, so that `check` judges scenarios against it, not against nothing: one bad
    setting must not make every channel look unconfigured.
    """
    collection = _Collection(plugins)
    problems = collection.problems
    call = collection.call
    registry = Registry()

    def take(kind: str, results: list[_HandedOver], expected: type, target: dict[str, Any]) -> None:
        collection.take(kind, results, lambda item: isinstance(item, expected), target)

    limits = LocalRateLimits() if rate_limits is None else rate_limits
    sources = call("register_sources", config=config, rate_limits=limits)
    take("source", sources, Source, registry.sources)
    channels = call("register_channels", config=config, rate_limits=limits)
    take("channel", channels, Channel, registry.channels)
    collection.take("channel kind", call("register_channel_kinds"), _is_channel_class, registry.channel_kinds)
    for name, channel in registry.channels.items():
        registry.channel_kinds.setdefault(name, channel)
    take("action", call("register_actions", config=config, rate_limits=limits), Action, registry.actions)
    take(
        "promo provider",
        call("register_promo_providers", config=config),
        PromoProvider,
        registry.promo_providers,
    )
    collection.take(
        "recommender",
        call("register_recommenders", config=config),
        lambda item: isinstance(item, Recommender),
        registry.recommenders,
        BUILTIN,
    )
    condition_owners: dict[str, _HandedOver] = {}
    for result in call("register_conditions"):
        for name, function in (result.value or {}).items():
            if name in registry.conditions:
                problems.append(
                    result.problem(f"duplicate condition name '{name}'{_also(condition_owners[name])}")
                )
            elif not callable(function):
                problems.append(result.problem(f"condition '{name}' is not callable"))
            else:
                registry.conditions[name] = function
                condition_owners[name] = result
    for name in config.channels if "register_channels" not in collection.failed else ():
        if name not in registry.channels:
            problems.append(
                config.problem(
                    ("channels", name),
                    f"no channel plugin provides '{name}'"
                    f"{did_you_mean(name, sorted(registry.channel_kinds))}",
                )
            )
    if "register_sources" not in collection.failed:
        problems.extend(_unknown_sources(config, sources, {r.plugin for r in channels}))
    return registry, problems


def _unknown_sources(config: Any, handed: list[_HandedOver], channel_plugins: set[str]) -> list[Problem]:
    """A section under `sources:` that no plugin took up, naming the source plugins there are.

    Offered are the plugins whose source follows a `sources:` section: not one whose source is
    on without one (the API's) nor a channel plugin's (a bot's updates follow `channels:`).
    """
    taken = {getattr(source, "name", None) for result in handed for source in result.value or ()}
    always_on = {
        r.plugin for r in handed if any(getattr(s, "name", None) not in config.sources for s in r.value or ())
    }
    offered = sorted({r.plugin for r in handed} - always_on - channel_plugins)
    return [
        config.problem(
            ("sources", name),
            f"no source plugin provides '{name}'{did_you_mean(name, offered)}; "
            f"installed: {', '.join(offered) or 'none'}",
            at_key=True,
        )
        for name in config.sources
        if name not in taken
    ]


def _also(owner: _HandedOver) -> str:
    """Where a name used twice was taken first."""
    return f", already taken by plugin '{owner.plugin}' ({owner.file}:{owner.line})"
