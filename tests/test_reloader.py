"""
Tests for L{gopherpost.reload.reloader}: validate all, prepare every part,
apply only if all could; one log line and one count per reload.
"""

from __future__ import annotations

import os
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gopherpost.config import ConfigError, settingsFromEnvironment
from gopherpost.configsource import ConfigSource
from gopherpost.reload.interfaces import IReconfigurable
from gopherpost.reload.reloader import FAILURE, SUCCESS, Reloader, ReloadMetrics, ReloadOutcome


@implementer(IReconfigurable)
class FakePart:
    """
    Records what it was asked; fails to prepare when told to.
    """

    name = "fake part"

    def __init__(self, fields: set[str], failWith: ConfigError | None = None) -> None:
        self.fields = frozenset(fields)
        self.failWith = failWith
        self.prepared: list = []
        self.applied: list = []
        self.result: object = None

    def prepareReload(self, settings):
        self.prepared.append(settings)
        if self.failWith is not None:
            raise self.failWith

        def apply():
            self.applied.append(settings)
            return self.result

        return apply


class ReloaderTests(SynchronousTestCase):
    """
    Reloads of an env file edited between them.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.write("SMTP_HOSTNAME=mx.test\nSMTP_BANNER=one\n")
        self.source = ConfigSource({"SMTP_MAX_RECIPIENTS": "7"}, envFile=self.path)
        loaded = self.source.load()
        self.settings = settingsFromEnvironment(loaded.variables)
        self.metrics = ReloadMetrics()
        self.reloader = Reloader(
            self.source, self.settings, settingsFromEnvironment, self.metrics, loaded=loaded
        )
        self.events = EventLoggingObserver.createWithCleanup(cast(Any, self), globalLogPublisher)

    def write(self, text: str) -> None:
        with open(self.path, "w") as f:
            f.write(text)

    def reload(self) -> ReloadOutcome:
        return self.successResultOf(self.reloader.reload())

    def lines(self, level: LogLevel | None = None) -> list[str]:
        return [
            e["line"]
            for e in self.events
            if "line" in e and (level is None or e["log_level"] == level)
        ]

    def test_interface(self) -> None:
        """
        The fake is a real L{IReconfigurable}.
        """
        verifyObject(IReconfigurable, FakePart({"banner"}))

    def test_changeApplied(self) -> None:
        """
        A valid change is prepared and applied by the parts that read it
        (not the others), becomes the settings in use, and is one info line
        naming the variables.
        """
        banner, other = FakePart({"banner"}), FakePart({"retryMax"})
        self.reloader.add(banner)
        self.reloader.add(other)
        self.write("SMTP_HOSTNAME=mx.test\nSMTP_BANNER=two\n")
        outcome = self.reload()
        self.assertTrue(outcome.succeeded)
        self.assertEqual(outcome.changed, ("SMTP_BANNER",))
        self.assertEqual([s.banner for s in banner.applied], ["two"])
        self.assertEqual(other.prepared, [])
        self.assertEqual(self.reloader.settings.banner, "two")
        self.assertEqual(self.reloader.loaded.variables["SMTP_BANNER"], "two")
        self.assertEqual(self.lines(LogLevel.info), ["Configuration reloaded: SMTP_BANNER changed"])
        self.assertEqual(self.metrics.counts, {SUCCESS: 1, FAILURE: 0})

    def test_nothingChanged(self) -> None:
        """
        A reload without changes touches no part, and says so.
        """
        part = FakePart({"banner"})
        self.reloader.add(part)
        outcome = self.reload()
        self.assertEqual(outcome.describe(), "Configuration reloaded: nothing changed")
        self.assertEqual(part.prepared, [])

    def test_invalidChangesNothing(self) -> None:
        """
        An invalid value anywhere: nothing is prepared or applied, the old
        settings stay, one error line names the variable and where it was
        set, and the failure is counted.
        """
        part = FakePart({"banner"})
        self.reloader.add(part)
        self.write("SMTP_HOSTNAME=mx.test\nSMTP_BANNER=two\nSMTP_PORT=nonsense\n")
        outcome = self.reload()
        self.assertFalse(outcome.succeeded)
        self.assertEqual(part.prepared, [])
        self.assertEqual(self.reloader.settings.banner, "one")
        [line] = self.lines(LogLevel.error)
        self.assertEqual(
            line,
            "Reload failed, nothing changed: SMTP_PORT: 'nonsense' is not a valid TCP port "
            f"(1-65535) (set in the env file {self.path}, line 3)",
        )
        self.assertEqual(self.metrics.counts, {SUCCESS: 0, FAILURE: 1})

    def test_missingFile(self) -> None:
        """
        The env file gone: nothing changes, the error says so.
        """
        os.unlink(self.path)
        outcome = self.reload()
        self.assertFalse(outcome.succeeded)
        self.assertIn("does not exist", outcome.error)

    def test_prepareFailureChangesNothing(self) -> None:
        """
        A part that cannot prepare (a certificate that does not load) stops
        the reload before any part applies anything.
        """
        good = FakePart({"banner"})
        bad = FakePart({"banner"}, ConfigError("SMTP_TLS_CERT", "does not load"))
        self.reloader.add(good)
        self.reloader.add(bad)
        self.write("SMTP_HOSTNAME=mx.test\nSMTP_BANNER=two\n")
        outcome = self.reload()
        self.assertFalse(outcome.succeeded)
        self.assertEqual(outcome.error, "SMTP_TLS_CERT: does not load")
        self.assertEqual(good.applied, [])
        self.assertEqual(self.reloader.settings.banner, "one")
        self.assertEqual(self.reloader.loaded.variables["SMTP_BANNER"], "one")

    def test_notApplied(self) -> None:
        """
        A change read by a part that cannot reload is logged as waiting for
        a restart, as is a change no part claims.
        """
        self.reloader.add(FakePart({"banner"}))
        self.reloader.addStatic("listeners", {"port"})
        self.write("SMTP_HOSTNAME=mx.test\nSMTP_BANNER=two\nSMTP_PORT=2600\nSMTP_RETRY_MAX=99\n")
        outcome = self.reload()
        self.assertTrue(outcome.succeeded)
        self.assertEqual(
            outcome.describe(),
            "Configuration reloaded: SMTP_PORT, SMTP_BANNER, SMTP_RETRY_MAX changed; not applied "
            "until a restart: SMTP_PORT (listeners); SMTP_RETRY_MAX (not known to reload)",
        )
        self.assertEqual(
            outcome.asJSON()["notApplied"],
            {"listeners": ["SMTP_PORT"], "not known to reload": ["SMTP_RETRY_MAX"]},
        )

    def test_fileContentChanged(self) -> None:
        """
        A file read again whose content changed under the same name (a
        renewed certificate) counts as a change of its variable.
        """
        keyFile = os.path.abspath(self.mktemp())
        with open(keyFile, "w") as f:
            f.write("key one")
        self.write(f"SMTP_HOSTNAME=mx.test\nSMTP_DKIM_SELECTOR=s\nSMTP_DKIM_KEY_PATH={keyFile}\n")
        part = FakePart({"dkimKeyPath"})
        self.reloader.add(part)
        self.assertEqual(self.reload().changed[-1], "SMTP_DKIM_KEY_PATH")
        self.assertEqual(self.reload().changed, ())
        with open(keyFile, "w") as f:
            f.write("key two")
        self.assertEqual(self.reload().changed, ("SMTP_DKIM_KEY_PATH (file)",))
        self.assertEqual(len(part.applied), 2)

    def test_oneAtATime(self) -> None:
        """
        A reload asked for while one is applying runs after it.
        """
        part = FakePart({"banner"})
        slow: Deferred = Deferred()
        part.result = slow
        self.reloader.add(part)
        self.write("SMTP_HOSTNAME=mx.test\nSMTP_BANNER=two\n")
        first = self.reloader.reload()
        self.write("SMTP_HOSTNAME=mx.test\nSMTP_BANNER=three\n")
        second = self.reloader.reload()
        self.assertNoResult(first)
        self.assertNoResult(second)
        part.result = None
        slow.callback(None)
        self.assertEqual(self.successResultOf(first).changed, ("SMTP_BANNER",))
        self.assertEqual(self.successResultOf(second).changed, ("SMTP_BANNER",))
        self.assertEqual(self.reloader.settings.banner, "three")

    def test_warnings(self) -> None:
        """
        The start-up warnings come again with every reload that reads.
        """
        seen = []
        self.reloader = Reloader(
            self.source,
            self.settings,
            settingsFromEnvironment,
            warn=lambda loaded, s: seen.append(loaded),
        )
        self.write("SMTP_HOSTNAME=mx.test\nSMTP_PROT=1\n")
        self.reload()
        self.assertEqual(seen[0].variables["SMTP_PROT"], "1")

    def test_metricsCollector(self) -> None:
        """
        The count is a prometheus_client collector of
        C{smtp_config_reloads_total}.
        """
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import generate_latest

        registry = CollectorRegistry()
        registry.register(self.metrics)
        self.write("SMTP_PORT=x\n")
        self.reload()
        text = generate_latest(registry).decode()
        self.assertIn('smtp_config_reloads_total{result="failure"} 1.0', text)
        self.assertIn('smtp_config_reloads_total{result="success"} 0.0', text)
