"""Plugin discovery: vgrpo's own loop over the ``vgrpo`` entry-point group, and the registry facade.

Unlike pluggy's ``load_setuptools_entrypoints``, one broken plugin never stops the others, a distribution
found twice on ``sys.path`` loads once, and two distributions claiming the same name are reported, never
silently shadowed. Every problem is recorded with the entry point, distribution and version.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.metadata as md
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

import pluggy
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from vgrpo import hookspecs
from vgrpo.errors import MissingPluginsError, NameConflictError, PluginLoadError, UnknownNameError
from vgrpo.rewards import Reward, RewardTable
from vgrpo.task import Task
from vgrpo.validation import validate_task

log = logging.getLogger(__name__)

GROUP = "vgrpo"
#: Distributions whose task and reward names may be bare (``rec``); everyone else uses ``namespace.name``.
BUILTIN_DISTRIBUTIONS = frozenset({"vgrpo", "vgrpo-rec", "vgrpo-ovd", "vgrpo-count", "vgrpo-math"})
STRICT_ENV = "VGRPO_STRICT_PLUGINS"
DISABLE_ENV = "VGRPO_DISABLE_PLUGINS"


@dataclass
class PluginInfo:
    """A plugin that loaded: its entry point name, distribution, and what it registered."""

    name: str
    distribution: str
    version: str
    module: str
    tasks: list[str] = field(default_factory=list)
    rewards: list[str] = field(default_factory=list)
    model_adapters: list[str] = field(default_factory=list)


@dataclass
class PluginProblem:
    """Something wrong with a plugin: an import error, a bad hook, an invalid task, a name conflict."""

    entry_point: str
    distribution: str
    version: str
    error: str


@dataclass
class _Owner:
    obj: Any
    entry_point: str
    distribution: str
    version: str


class PluginRegistry:
    """What the installed plugins provide: tasks, rewards, model adapters, and the problems found."""

    def __init__(self) -> None:
        self.plugins: list[PluginInfo] = []
        self.errors: list[PluginProblem] = []
        self.disabled: list[str] = []
        self._disabled_dists: dict[str, list[str]] = {}
        self._entries: dict[str, dict[str, _Owner]] = {"task": {}, "reward": {}, "model adapter": {}}
        self._conflicts: dict[str, dict[str, list[_Owner]]] = {"task": {}, "reward": {}, "model adapter": {}}

    # -- lookups -----------------------------------------------------------------------------------------
    @property
    def tasks(self) -> dict[str, Task]:
        return {n: o.obj for n, o in sorted(self._entries["task"].items())}

    @property
    def rewards(self) -> RewardTable:
        """The plugin rewards by name; names two distributions claim are left out and listed in
        ``.conflicts`` (name → message naming both), so a use of one can say so."""
        table = {n: o.obj for n, o in sorted(self._entries["reward"].items())}
        conflicts = {n: _conflict_message("reward", n, o) for n, o in self._conflicts["reward"].items()}
        return RewardTable(table, conflicts=conflicts)

    @property
    def model_adapters(self) -> dict[str, Any]:
        return {n: o.obj for n, o in self._entries["model adapter"].items()}

    def task(self, name: str) -> Task:
        """The task called ``name``; a clear error when it is unknown or claimed twice."""
        return self._get("task", name)

    def reward(self, name: str) -> Reward:
        """The plugin reward (from ``vgrpo_rewards``) called ``name``."""
        return self._get("reward", name)

    def owner(self, kind: str, name: str) -> tuple[str, str]:
        """(distribution, version) that registered a task/reward name."""
        o = self._entries[kind][name]
        return o.distribution, o.version

    def _get(self, kind: str, name: str) -> Any:
        if name in self._entries[kind]:
            return self._entries[kind][name].obj
        if name in self._conflicts[kind]:
            raise NameConflictError(_conflict_message(kind, name, self._conflicts[kind][name]))
        known = sorted(self._entries[kind])
        hint = difflib.get_close_matches(name, known, n=1)
        raise UnknownNameError(
            f"unknown {kind} {name!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; installed: {known or 'none'}"
            + (
                f"; plugins that failed to load: {[e.entry_point for e in self.errors]}"
                if self.errors
                else ""
            )
        )

    # -- required_plugins ----------------------------------------------------------------------------------
    def require(self, specs: Iterable[str]) -> None:
        """Check ``required_plugins`` specifiers (``"vgrpo-ovd>=0.2"``) against installed distributions."""
        problems = []
        for spec in specs:
            try:
                req = Requirement(spec)
            except InvalidRequirement as exc:
                problems.append(f"{spec!r} is not a valid requirement ({exc})")
                continue
            try:
                installed = md.version(req.name)
            except md.PackageNotFoundError:
                problems.append(f"{spec} (not installed)")
                continue
            if req.specifier and not req.specifier.contains(installed, prereleases=True):
                problems.append(f"{spec} (installed: {installed})")
                continue
            key = canonicalize_name(req.name)
            failed = [e.entry_point for e in self.errors if canonicalize_name(e.distribution) == key]
            loaded = any(canonicalize_name(p.distribution) == key for p in self.plugins)
            if failed and not loaded:
                problems.append(f"{spec} (installed {installed}, but its plugin failed to load: {failed})")
            elif self._disabled_dists.get(key) and not loaded:
                problems.append(f"{spec} (installed {installed}, but disabled: {self._disabled_dists[key]})")
        if problems:
            have = sorted({f"{p.distribution}=={p.version}" for p in self.plugins})
            raise MissingPluginsError(
                f"required plugins not satisfied: {'; '.join(problems)}. Installed vgrpo plugins: {have or 'none'}. "
                "Install them with pip, e.g. pip install '" + "' '".join(specs) + "'"
            )

    def to_json(self) -> dict[str, Any]:
        """The ``vgrpo plugins --json`` document."""
        plugins = []
        for p in self.plugins:
            row = {k: v for k, v in asdict(p).items() if k != "module"}
            plugins.append(row)
        return {"plugins": plugins, "errors": [asdict(e) for e in self.errors]}

    # -- registration (used by discovery) ------------------------------------------------------------------
    def _add(self, kind: str, name: str, owner: _Owner) -> list[tuple[_Owner, str]]:
        """Register a name. On a conflict the name is withdrawn and the result lists, for each claimant that
        has no problem row about it yet, the message to file under it (the same for all, naming them all)."""
        if name in self._conflicts[kind]:
            self._conflicts[kind][name].append(owner)
            return [(owner, _conflict_message(kind, name, self._conflicts[kind][name]))]
        if name in self._entries[kind]:
            first = self._entries[kind].pop(name)
            self._conflicts[kind][name] = [first, owner]
            for p in self.plugins:
                bucket = {"task": p.tasks, "reward": p.rewards, "model adapter": p.model_adapters}[kind]
                if p.name == first.entry_point and name in bucket:
                    bucket.remove(name)
            message = _conflict_message(kind, name, self._conflicts[kind][name])
            return [(first, message), (owner, message)]
        self._entries[kind][name] = owner
        return []


def _conflict_message(kind: str, name: str, owners: Sequence[_Owner]) -> str:
    who = " and ".join(f"{o.distribution} {o.version} (entry point {o.entry_point!r})" for o in owners)
    return (
        f"{kind} name {name!r} is provided by {who}; it is unusable until one of them is uninstalled "
        f"(or disabled by entry point: {DISABLE_ENV}={owners[-1].entry_point})"
    )


def _dist_name(dist: md.Distribution) -> str:
    return dist.metadata["Name"] or "?"


def _candidates(path: list[str] | None) -> list[tuple[md.EntryPoint, md.Distribution]]:
    """Entry points of group ``vgrpo``, each distribution once (the first on the path wins)."""
    seen: set[str] = set()
    found = []
    for dist in md.distributions(**({"path": path} if path is not None else {})):
        key = canonicalize_name(_dist_name(dist))
        if key in seen:
            continue
        seen.add(key)
        for ep in dist.entry_points:
            if ep.group == GROUP:
                found.append((ep, dist))
    found.sort(key=lambda pair: (canonicalize_name(_dist_name(pair[1])), pair[0].name))
    return found


def _hook_name_problems(pm: pluggy.PluginManager, module: ModuleType) -> list[str]:
    """Misspelled hooks (marked but unknown) and hooks that forgot the @vgrpo.hookimpl marker."""
    problems = []
    for attr in dir(module):
        try:
            marked = pm.parse_hookimpl_opts(module, attr) is not None
        except Exception:  # noqa: BLE001 - exotic module attributes
            continue
        if marked and attr not in hookspecs.HOOK_NAMES:
            hint = difflib.get_close_matches(attr, hookspecs.HOOK_NAMES, n=1, cutoff=0.5)
            problems.append(
                f"unknown hook {attr!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; hooks are {list(hookspecs.HOOK_NAMES)}"
            )
        elif not marked and attr in hookspecs.HOOK_NAMES and callable(getattr(module, attr)):
            problems.append(f"function {attr!r} is not marked with @vgrpo.hookimpl, so it is never called")
    return problems


def _as_list(value: Any, hook: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    raise TypeError(f"hook {hook} must return a list, got {type(value).__name__}")


@contextlib.contextmanager
def plugin_output() -> Iterator[None]:
    """Run plugin code inside this: what it prints goes to stderr, so vgrpo's machine-readable stdout (``--json``,
    ``vgrpo score``'s JSONL) stays valid whatever a plugin prints. (Reward workers redirect at the file
    descriptor, which catches C extensions too.)"""
    sys.stdout.flush()
    with contextlib.redirect_stdout(sys.stderr):
        yield


def load_plugins(
    *,
    strict: bool | None = None,
    disabled: Iterable[str] | None = None,
    path: list[str] | None = None,
) -> PluginRegistry:
    """Discover, load and validate every installed plugin (their imports, hooks and checks run inside
    :func:`plugin_output`).

    ``strict`` (default: env ``VGRPO_STRICT_PLUGINS=1``) turns any recorded problem into a
    :class:`PluginLoadError`; ``disabled`` (plus env ``VGRPO_DISABLE_PLUGINS=a,b``) skips entry points by
    name; ``path`` searches these directories instead of ``sys.path``.
    """
    with plugin_output():
        return _load_plugins(strict=strict, disabled=disabled, path=path)


def _load_plugins(
    *, strict: bool | None, disabled: Iterable[str] | None, path: list[str] | None
) -> PluginRegistry:
    if strict is None:
        strict = os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
    blocked = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    blocked |= set(disabled or ())

    registry = PluginRegistry()
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    ep_owner: dict[str, str] = {}

    for ep, dist in _candidates(path):
        dname, dversion = _dist_name(dist), dist.version or "?"

        def problem(
            msg: str, *, ep: md.EntryPoint = ep, dname: str = dname, dversion: str = dversion
        ) -> None:
            registry.errors.append(PluginProblem(ep.name, dname, dversion, msg))
            log.warning("vgrpo plugin %r (%s %s): %s", ep.name, dname, dversion, msg)

        if ep.name in blocked:
            registry.disabled.append(ep.name)
            registry._disabled_dists.setdefault(canonicalize_name(dname), []).append(ep.name)
            log.info("vgrpo plugin %r disabled by %s", ep.name, DISABLE_ENV)
            continue
        if ep.name in ep_owner:
            problem(
                f"entry point name {ep.name!r} is also declared by {ep_owner[ep.name]}; this one is skipped"
            )
            continue
        ep_owner[ep.name] = f"{dname} {dversion}"
        try:
            module = ep.load()
        except BaseException as exc:  # noqa: BLE001 - SystemExit in a plugin's import must not stop us
            if isinstance(exc, KeyboardInterrupt):
                raise
            problem(f"import failed: {type(exc).__name__}: {exc}")
            continue
        hook_problems = _hook_name_problems(pm, module) if isinstance(module, ModuleType) else []
        if hook_problems:
            for msg in hook_problems:
                problem(msg)
            continue
        try:
            pm.register(module, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - pluggy's validation errors name the hook and arguments
            problem(f"invalid hook implementation: {exc}")
            continue

        info = PluginInfo(ep.name, dname, dversion, getattr(module, "__name__", str(module)))
        registry.plugins.append(info)
        owner_args = {"entry_point": ep.name, "distribution": dname, "version": dversion}
        builtin = canonicalize_name(dname) in BUILTIN_DISTRIBUTIONS
        for hook_name in hookspecs.HOOK_NAMES:
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not module:
                    continue
                try:
                    items = _as_list(impl.function(), hook_name)
                except Exception as exc:  # noqa: BLE001
                    problem(f"hook {hook_name} raised {type(exc).__name__}: {exc}")
                    continue
                for item in items:
                    _register_item(
                        registry, hook_name, item, info, _Owner(item, **owner_args), builtin, problem
                    )

    if strict and registry.errors:
        lines = "\n".join(
            f"  {e.entry_point} ({e.distribution} {e.version}): {e.error}" for e in registry.errors
        )
        raise PluginLoadError(f"{len(registry.errors)} plugin problem(s) (strict mode):\n{lines}")
    return registry


def _register_item(
    registry: PluginRegistry,
    hook: str,
    item: Any,
    info: PluginInfo,
    owner: _Owner,
    builtin: bool,
    problem: Any,
) -> None:
    if hook == "vgrpo_tasks":
        if isinstance(item, type) and issubclass(item, Task):
            try:
                item = item()
            except Exception as exc:  # noqa: BLE001
                problem(f"task class {item.__name__} could not be instantiated: {exc}")
                return
        if not isinstance(item, Task):
            problem(f"vgrpo_tasks returned {item!r}, expected a vgrpo.Task subclass or instance")
            return
        owner.obj = item
        name = getattr(item, "name", None)
        issues = validate_task(item)
        if not issues and not builtin and "." not in name:
            issues = [f"task name {name!r} must be dotted for a third-party plugin (e.g. 'acme.{name}')"]
        if issues:
            problem(f"task {name!r} is invalid: " + "; ".join(issues))
            return
        kind, bucket = "task", info.tasks
    elif hook == "vgrpo_rewards":
        if not isinstance(item, Reward):
            problem(f"vgrpo_rewards returned {item!r}, expected a vgrpo.Reward (use @vgrpo.reward)")
            return
        name = item.name
        if not builtin and "." not in name:
            problem(f"reward name {name!r} must be dotted for a third-party plugin (e.g. 'acme.{name}')")
            return
        kind, bucket = "reward", info.rewards
    else:
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            problem(f"model adapter {item!r} has no 'name'")
            return
        kind, bucket = "model adapter", info.model_adapters
    conflicts = registry._add(kind, name, owner)
    for claimant, message in conflicts:  # a row under every entry point claiming the name, not the last one
        if claimant is owner:
            problem(message)
        else:
            registry.errors.append(
                PluginProblem(claimant.entry_point, claimant.distribution, claimant.version, message)
            )
            log.warning(
                "vgrpo plugin %r (%s %s): %s",
                claimant.entry_point,
                claimant.distribution,
                claimant.version,
                message,
            )
    if not conflicts:
        bucket.append(name)


_REGISTRY: PluginRegistry | None = None


def get_registry(*, reload: bool = False) -> PluginRegistry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = load_plugins()
    return _REGISTRY
