"""The plugin system: pluggy hook specs, the entry-point loader and per-plugin error isolation.

A plugin is a module named by an entry point in the group ``kdtoolbox.plugins`` that implements
:func:`kdtoolbox_register`::

    import kdtoolbox

    @kdtoolbox.hookimpl
    def kdtoolbox_register(registry):
        registry.distiller(MyDistiller)
        registry.loss(MyLoss)

Each plugin is loaded in isolation. An import error, a hook whose signature does not match the
spec, an exception inside the hook, or a component name that already exists is recorded once with
the plugin's name, package and cause, a warning is issued, and nothing of that plugin is registered
(its registrations are staged and committed only if all of them succeed). The other plugins keep
working. ``KDTOOLBOX_DISABLE_PLUGINS=a,b`` skips plugins by entry-point name;
``KDTOOLBOX_STRICT_PLUGINS=1`` (or ``load_plugins(strict=True)``) turns failures into a
:class:`PluginLoadError`.
"""
from __future__ import annotations

import importlib.metadata as importlib_metadata
import os
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pluggy

PROJECT = 'kdtoolbox'
ENTRY_POINT_GROUP = 'kdtoolbox.plugins'
DISABLE_ENV = 'KDTOOLBOX_DISABLE_PLUGINS'
STRICT_ENV = 'KDTOOLBOX_STRICT_PLUGINS'

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class PluginLoadError(RuntimeError):
    """Raised in strict mode when a plugin cannot be loaded."""


class PluginWarning(UserWarning):
    """Issued once per plugin that failed to load (non-strict mode)."""


class HookSpecs:
    """What a plugin may implement."""

    @hookspec
    def kdtoolbox_register(self, registry: 'ComponentRegistrar') -> None:
        """Register the plugin's components through ``registry`` (a :class:`ComponentRegistrar`)."""


@dataclass
class PluginInfo:
    """One entry point of the group, and what became of it."""
    name: str
    module: str
    package: Optional[str] = None
    version: Optional[str] = None
    status: str = 'pending'  # 'loaded' | 'failed' | 'disabled'
    error: Optional[str] = None  # one line: what went wrong
    details: Optional[str] = None  # traceback, for `plugins doctor`
    components: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)

    def describe(self) -> str:
        pkg = f'{self.package} {self.version}' if self.package else 'unknown package'
        return f'{self.name} ({pkg}, module {self.module}): {self.error}'


class ComponentRegistrar:
    """What ``kdtoolbox_register`` receives: stages registrations, commits them all or none.

    Each method takes the class (and optionally the name, default ``cls.__name__``) and returns
    the class, so it also works as a decorator inside the hook.
    """

    def __init__(self, plugin_name: str):
        self.plugin_name = plugin_name
        self._staged: list[tuple[str, str, Any]] = []

    def _stage(self, kind: str, cls: Any, name: Optional[str]) -> Any:
        name = name or getattr(cls, '__name__', None)
        if not isinstance(name, str) or not name:
            raise TypeError(f'cannot register {cls!r} as a {kind}: no name')
        self._staged.append((kind, name, cls))
        return cls

    def distiller(self, cls: Any, name: Optional[str] = None) -> Any:
        return self._stage('distiller', cls, name)

    def loss(self, cls: Any, name: Optional[str] = None) -> Any:
        return self._stage('loss', cls, name)

    def adapter(self, cls: Any, name: Optional[str] = None) -> Any:
        return self._stage('adapter', cls, name)

    def model(self, cls: Any, name: Optional[str] = None) -> Any:
        return self._stage('model', cls, name)

    def hook(self, cls: Any, name: Optional[str] = None) -> Any:
        return self._stage('hook', cls, name)

    def dataset(self, cls: Any, name: Optional[str] = None) -> Any:
        return self._stage('dataset', cls, name)

    def metric(self, cls: Any, name: Optional[str] = None) -> Any:
        return self._stage('metric', cls, name)

    def transform(self, cls: Any, name: Optional[str] = None) -> Any:
        return self._stage('transform', cls, name)

    def commit(self) -> list[tuple[str, str]]:
        """Register every staged component, or none if any name is taken."""
        registries = _registries()
        seen: dict[tuple[str, str], Any] = {}
        for kind, name, cls in self._staged:
            reg = registries[kind]
            if (kind, name) in seen:
                raise KeyError(f'{kind} name {name!r} is registered twice by this plugin')
            if name in reg.module_dict:
                owner = _owner_of(kind, name)
                raise KeyError(f"{kind} name {name!r} is already registered"
                               f"{f' by plugin {owner!r}' if owner else ' by kdtoolbox'}")
            seen[(kind, name)] = cls
        for kind, name, cls in self._staged:
            registries[kind].register_module(name=name, module=cls)
        return [(kind, name) for kind, name, _ in self._staged]


def _registries() -> dict[str, Any]:
    from . import registry as r
    return {'distiller': r.DISTILLERS, 'loss': r.LOSSES, 'adapter': r.ADAPTERS,
            'model': r.MODELS, 'hook': r.HOOKS, 'dataset': r.DATASETS,
            'metric': r.METRICS, 'transform': r.TRANSFORMS}


_lock = threading.RLock()
_plugins: dict[str, PluginInfo] = {}
_loaded = False
_loading = False


def _owner_of(kind: str, name: str) -> Optional[str]:
    for info in _plugins.values():
        if (kind, name) in info.components:
            return info.name
    return None


def _distribution_of(ep: importlib_metadata.EntryPoint) -> tuple[Optional[str], Optional[str]]:
    dist = getattr(ep, 'dist', None)
    if dist is None:
        return None, None
    return dist.metadata['Name'], dist.version


def _one_line(exc: BaseException) -> str:
    """``'Type: message'`` on one line (pluggy's validation messages span several lines; a
    KeyError's str() would be the repr of its message)."""
    msg = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    parts = [part.strip() for part in str(msg).splitlines() if part.strip()]
    return f"{type(exc).__name__}: {'; '.join(parts)}" if parts else type(exc).__name__


def _load_order(ep: importlib_metadata.EntryPoint) -> tuple[bool, str]:
    """kdtoolbox's own (built-in) plugins first, then the others by entry-point name: a
    third-party plugin that reuses a built-in name is the one left out, whatever its name."""
    package, _ = _distribution_of(ep)
    return (package or '').lower().replace('_', '-') != PROJECT, ep.name


def _strict_from_env() -> bool:
    return os.environ.get(STRICT_ENV, '').lower() in ('1', 'true', 'yes', 'on')


def _disabled_from_env() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, '').split(',') if n.strip()}


def _load_one(ep: importlib_metadata.EntryPoint, info: PluginInfo) -> None:
    """Import one plugin, validate its hooks with pluggy and run its registration, or raise."""
    module = ep.load()
    manager = pluggy.PluginManager(PROJECT)  # one per plugin: a bad plugin can't affect others
    manager.add_hookspecs(HookSpecs)
    manager.register(module, name=info.name)  # validates hook names and signatures
    manager.check_pending()  # hookimpls that match no spec (e.g. a misspelt hook name)
    if not manager.hook.kdtoolbox_register.get_hookimpls():
        raise pluggy.PluginValidationError(module, 'the module implements no kdtoolbox_register hook')
    registrar = ComponentRegistrar(info.name)
    manager.hook.kdtoolbox_register(registry=registrar)
    info.components = registrar.commit()


def load_plugins(strict: Optional[bool] = None) -> dict[str, PluginInfo]:
    """Load every plugin of the entry-point group once per process; return them by name.

    Idempotent and cheap after the first call. ``strict`` (default: ``$KDTOOLBOX_STRICT_PLUGINS``)
    raises :class:`PluginLoadError` naming every plugin that failed, after loading the rest.
    """
    global _loaded, _loading
    strict = _strict_from_env() if strict is None else strict
    with _lock:
        if not _loaded and not _loading:
            _loading = True  # registry lookups made by a plugin's import must not recurse
            try:
                disabled = _disabled_from_env()
                for ep in sorted(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP),
                                 key=_load_order):
                    if ep.name in _plugins:
                        continue  # the same name twice on sys.path: the first one wins
                    package, version = _distribution_of(ep)
                    info = PluginInfo(name=ep.name, module=ep.value, package=package, version=version)
                    _plugins[ep.name] = info
                    if ep.name in disabled:
                        info.status = 'disabled'
                        continue
                    try:
                        _load_one(ep, info)
                        info.status = 'loaded'
                    except Exception as exc:  # noqa: BLE001  (isolation is the point)
                        info.status = 'failed'
                        info.error = _one_line(exc)
                        info.details = traceback.format_exc()
                        if not strict:
                            warnings.warn(f'kdtoolbox plugin {info.describe()}; it is left out',
                                          PluginWarning, stacklevel=2)
                _loaded = True
            finally:
                _loading = False
    if strict:
        failed = plugin_failures()
        if failed:
            raise PluginLoadError('kdtoolbox plugins failed to load:\n' +
                                  '\n'.join(f'  - {f.describe()}' for f in failed))
    return dict(_plugins)


def plugin_failures() -> list[PluginInfo]:
    """Plugins whose loading failed (empty before :func:`load_plugins` ran)."""
    return [p for p in _plugins.values() if p.status == 'failed']


def reset_plugins() -> None:
    """Unregister every plugin component and forget the plugins (tests, and re-scans after an install)."""
    global _loaded
    with _lock:
        regs = _registries()
        for info in _plugins.values():
            for kind, name in info.components:
                regs[kind].module_dict.pop(name, None)
        _plugins.clear()
        _loaded = False
        importlib_metadata_cache_clear()


def importlib_metadata_cache_clear() -> None:
    """Forget cached path listings so packages installed during this process are found."""
    import importlib
    importlib.invalidate_caches()


def format_plugin_table(plugins: dict[str, PluginInfo]) -> str:
    """A human-readable listing: one line per plugin, then its components."""
    if not plugins:
        return f'no plugins found in the entry-point group {ENTRY_POINT_GROUP!r}'
    lines = []
    for info in plugins.values():
        pkg = f'{info.package or "?"} {info.version or ""}'.strip()
        lines.append(f'{info.name:<20} {info.status:<9} {pkg:<28} {info.module}')
        for kind, name in info.components:
            lines.append(f'    {kind:<10} {name}')
        if info.error:
            lines.append(f'    error: {info.error}')
    return '\n'.join(lines)


CallableHook = Callable[..., Any]
