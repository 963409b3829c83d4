# -*- test-case-name: tests.test_reloader -*-
"""
One live reload: read the configuration again (the env file included),
validate all of it, let every part that reads a changed setting prepare
it, and apply it only if every part could.

The outcome is one log line: C{"Configuration reloaded: SMTP_BANNER,
SMTP_TLS_CERT (file) changed"} (and what needs a restart), or C{"Reload
failed, nothing changed: SMTP_PORT: ..."}; and one count in
C{smtp_config_reloads_total{result="success"|"failure"}}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client.core import CounterMetricFamily
from twisted.internet.defer import Deferred, DeferredLock, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gopherpost.config import ConfigError, Settings
from gopherpost.configsource import ConfigSource, LoadedEnvironment, explain
from gopherpost.reload.changes import Changes, changesBetween, fileDigests
from gopherpost.reload.interfaces import IReconfigurable

__all__ = ["ReloadOutcome", "ReloadMetrics", "Reloader", "SUCCESS", "FAILURE"]

_log = Logger()

SUCCESS = "success"
FAILURE = "failure"


@dataclass(frozen=True)
class ReloadOutcome:
    """
    What one reload did.

    @ivar succeeded: whether the new configuration is in use.
    @ivar changed: the variables that changed (a file's content as
        C{"SMTP_TLS_CERT (file)"}).
    @ivar notApplied: per part that cannot reload, the variables it reads
        that changed: they take effect at the next restart.
    @ivar error: why the reload failed (one line), else L{None}.
    """

    succeeded: bool
    changed: tuple[str, ...] = ()
    notApplied: tuple[tuple[str, tuple[str, ...]], ...] = ()
    error: str | None = None

    def describe(self) -> str:
        """
        The log line.
        """
        if not self.succeeded:
            return f"Reload failed, nothing changed: {self.error}"
        if not self.changed:
            return "Configuration reloaded: nothing changed"
        line = f"Configuration reloaded: {', '.join(self.changed)} changed"
        if self.notApplied:
            parts = "; ".join(f"{', '.join(names)} ({part})" for part, names in self.notApplied)
            line += f"; not applied until a restart: {parts}"
        return line

    def asJSON(self) -> dict[str, Any]:
        """
        For C{gopherpostctl config reload --json}.
        """
        return {
            "succeeded": self.succeeded,
            "changed": list(self.changed),
            "notApplied": {part: list(names) for part, names in self.notApplied},
            "error": self.error,
            "message": self.describe(),
        }


class ReloadMetrics:
    """
    C{smtp_config_reloads_total{result}}, as a C{prometheus_client}
    collector (register it with L{gopherpost.metrics.Metrics.registry}).
    """

    def __init__(self) -> None:
        self.counts = {SUCCESS: 0, FAILURE: 0}

    def count(self, result: str) -> None:
        """
        Count one reload.
        """
        self.counts[result] += 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        """
        The metric family.
        """
        family = CounterMetricFamily(
            "smtp_config_reloads", "Configuration reloads (SIGHUP).", labels=["result"]
        )
        for result, count in self.counts.items():
            family.add_metric([result], count)
        yield family


@dataclass
class _Static:
    name: str
    fields: frozenset[str]


class Reloader:
    """
    Runs live reloads, one at a time.

    @param source: where the configuration is read from.
    @param settings: the configuration in use now.
    @param parse: turns the variables into L{Settings} (raising
        L{ConfigError}): L{gopherpost.config.settingsFromEnvironment}.
    @param metrics: counts the reloads, or L{None}.
    @param warn: called with the variables after each successful read, for
        the warnings (unknown variables) that start-up gives as well.

    @param loaded: the variables C{settings} came from.

    @ivar settings: the configuration in use.
    @ivar loaded: the variables it came from (L{LoadedEnvironment}); while
        parts prepare and apply a reload, already the new ones.
    """

    def __init__(
        self,
        source: ConfigSource,
        settings: Settings,
        parse: Callable[[Mapping[str, str]], Settings],
        metrics: ReloadMetrics | None = None,
        warn: Callable[[LoadedEnvironment, Settings], None] | None = None,
        loaded: LoadedEnvironment | None = None,
    ) -> None:
        self.source = source
        self.settings = settings
        self.loaded = loaded if loaded is not None else LoadedEnvironment({})
        self._parse = parse
        self._metrics = metrics
        self._warn = warn
        self._parts: list[Any] = []
        self._static: list[_Static] = []
        self._digests = fileDigests(settings)
        self._lock = DeferredLock()

    def add(self, part: IReconfigurable) -> None:
        """
        A part that reloads what it reads.
        """
        self._parts.append(part)

    def addStatic(self, name: str, fields: Iterable[str]) -> None:
        """
        A part that reads C{fields} once, at start-up: a change to them is
        logged as needing a restart.
        """
        self._static.append(_Static(name, frozenset(fields)))

    @property
    def coveredFields(self) -> frozenset[str]:
        """
        Every field some part (reloadable or not) says it reads.
        """
        covered: set[str] = set()
        for part in self._parts:
            covered |= part.fields
        for static in self._static:
            covered |= static.fields
        return frozenset(covered)

    def reload(self) -> Deferred[ReloadOutcome]:
        """
        Reload now, or right after the reload in progress.

        @return: fires with the L{ReloadOutcome} (never fails).
        """
        d = cast("Deferred[ReloadOutcome]", self._lock.run(self._reload))
        return d.addErrback(self._unexpected)

    def _unexpected(self, failure: Failure) -> ReloadOutcome:
        _log.failure("Reload failed", failure)
        self._count(FAILURE)
        return ReloadOutcome(False, error=f"internal error: {failure.getErrorMessage()}")

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.count(result)

    def _fail(self, problem: str) -> ReloadOutcome:
        outcome = ReloadOutcome(False, error=problem)
        _log.error("{line}", line=outcome.describe())
        self._count(FAILURE)
        return outcome

    def _reload(self) -> Any:
        loaded = None
        try:
            loaded = self.source.load()
            new = self._parse(loaded.variables)
        except ConfigError as e:
            return self._fail(explain(e, loaded))
        for problem in loaded.problems:
            _log.warn("{problem}", problem=problem)
        if self._warn is not None:
            self._warn(loaded, new)
        digests = fileDigests(new)
        changes = changesBetween(self.settings, new, self._digests, digests)
        if not changes:
            self.loaded = loaded
            outcome = ReloadOutcome(True)
            _log.info("{line}", line=outcome.describe())
            self._count(SUCCESS)
            return outcome
        previous, self.loaded = self.loaded, loaded
        applies = []
        try:
            for part in self._parts:
                if part.fields & changes.all:
                    applies.append(part.prepareReload(new))
        except ConfigError as e:
            self.loaded = previous
            return self._fail(explain(e, loaded))
        self.settings = new
        self._digests = digests
        d = gatherResults([maybeDeferred(apply) for apply in applies], consumeErrors=True)
        d.addCallback(lambda _: self._succeeded(changes))
        return d

    def _succeeded(self, changes: Changes) -> ReloadOutcome:
        notApplied = []
        for static in self._static:
            names = changes.variables(static.fields)
            if names:
                notApplied.append((static.name, tuple(names)))
        covered = self.coveredFields
        unknown = changes.variables(changes.all - covered)
        if unknown:
            notApplied.append(("not known to reload", tuple(unknown)))
        outcome = ReloadOutcome(True, tuple(changes.variables()), tuple(notApplied))
        _log.info("{line}", line=outcome.describe())
        self._count(SUCCESS)
        return outcome
