"""
Tests for the content filters' settings in L{gopherpost.config}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.config import (
    ConfigError,
    MilterSpec,
    Settings,
    SpamdAddress,
    settingsFromEnvironment,
)


def settings(**environ: str) -> Settings:
    return settingsFromEnvironment(environ, defaultHostname=lambda: "host.test")


class DefaultsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        No filter unless configured; tempfail when one fails.
        """
        s = settings()
        self.assertIsNone(s.rspamdURL)
        self.assertEqual(s.rspamdScope, "inbound")
        self.assertEqual(s.rspamdTimeout, 20.0)
        self.assertEqual(s.filterFail, "tempfail")
        self.assertIsNone(s.spamd)
        self.assertEqual((s.spamdScope, s.spamdTimeout, s.spamdMaxSize), ("inbound", 20.0, 512000))
        self.assertEqual(s.spamRejectScore, 10.0)
        self.assertEqual(s.milters, ())


class ValuesTests(SynchronousTestCase):
    def test_rspamd(self) -> None:
        s = settings(
            SMTP_RSPAMD_URL="http://127.0.0.1:11333/",
            SMTP_RSPAMD_SCOPE="all",
            SMTP_RSPAMD_TIMEOUT="2.5",
            SMTP_FILTER_FAIL="accept",
        )
        self.assertEqual(s.rspamdURL, "http://127.0.0.1:11333")
        self.assertEqual((s.rspamdScope, s.rspamdTimeout, s.filterFail), ("all", 2.5, "accept"))

    def test_spamd(self) -> None:
        s = settings(
            SMTP_SPAMD="127.0.0.1:7830",
            SMTP_SPAM_REJECT_SCORE="15",
            SMTP_SPAMD_MAX_SIZE="1M",
            SMTP_SPAMD_SCOPE="all",
            SMTP_SPAMD_TIMEOUT="5",
        )
        self.assertEqual(s.spamd, SpamdAddress("127.0.0.1", 7830))
        self.assertEqual(str(s.spamd), "127.0.0.1:7830")
        self.assertEqual((s.spamRejectScore, s.spamdMaxSize), (15.0, 1024 * 1024))
        self.assertEqual(settings(SMTP_SPAMD="localhost").spamd, SpamdAddress("localhost", 783))
        self.assertEqual(
            settings(SMTP_SPAMD="unix:/run/spamd.sock").spamd, SpamdAddress(path="/run/spamd.sock")
        )
        self.assertIsNone(settings(SMTP_SPAM_REJECT_SCORE="none").spamRejectScore)
        self.assertEqual(settings(SMTP_SPAM_REJECT_SCORE="-1.5").spamRejectScore, -1.5)

    def test_milters(self) -> None:
        s = settings(
            SMTP_MILTERS=(
                "inet:127.0.0.1:8891;name=opendkim, inet:7357@127.0.0.1;timeout=10;default=accept,"
                "unix:/run/clamav/clamav-milter.ctl;default=reject;scope=inbound,"
                "inet6:[::1]:11332"
            )
        )
        self.assertEqual(
            s.milters,
            (
                MilterSpec("inet:127.0.0.1:8891", "127.0.0.1", 8891, name="opendkim"),
                MilterSpec(
                    "inet:7357@127.0.0.1",
                    "127.0.0.1",
                    7357,
                    name="milter:inet:7357@127.0.0.1",
                    timeout=10.0,
                    default="accept",
                ),
                MilterSpec(
                    "unix:/run/clamav/clamav-milter.ctl",
                    path="/run/clamav/clamav-milter.ctl",
                    name="milter:unix:/run/clamav/clamav-milter.ctl",
                    default="reject",
                    scope="inbound",
                ),
                MilterSpec("inet6:[::1]:11332", "::1", 11332, name="milter:inet6:[::1]:11332"),
            ),
        )
        self.assertEqual(s.milters[0].timeout, 30.0)


class ErrorTests(SynchronousTestCase):
    """
    Bad values name the variable.
    """

    def assertBad(self, variable: str, value: str, problem: str) -> None:
        with self.assertRaises(ConfigError) as caught:
            settings(**{variable: value})
        self.assertEqual(caught.exception.variable, variable)
        self.assertIn(problem, caught.exception.problem)

    def test_rspamd(self) -> None:
        self.assertBad("SMTP_RSPAMD_URL", "127.0.0.1:11333", "not an http:// or https:// URL")
        self.assertBad("SMTP_RSPAMD_URL", "ftp://h", "not an http")
        self.assertBad("SMTP_RSPAMD_URL", "http://", "has no host")
        self.assertBad("SMTP_RSPAMD_URL", "http://h:99999", "not a URL")
        self.assertBad("SMTP_RSPAMD_URL", "http://h/?x=1", "give only")
        self.assertBad("SMTP_RSPAMD_SCOPE", "outbound", "not one of inbound, all")
        self.assertBad("SMTP_RSPAMD_TIMEOUT", "0", "positive")
        self.assertBad("SMTP_FILTER_FAIL", "reject", "not one of tempfail, accept")

    def test_spamd(self) -> None:
        self.assertBad("SMTP_SPAMD", "127.0.0.1:0", "not a valid TCP port")
        self.assertBad("SMTP_SPAMD", "unix:relative", "absolute")
        self.assertBad("SMTP_SPAM_REJECT_SCORE", "high", "not a score")
        self.assertBad("SMTP_SPAM_REJECT_SCORE", "nan", "not a score")
        self.assertBad("SMTP_SPAMD_MAX_SIZE", "big", "not a size")

    def test_milters(self) -> None:
        self.assertBad("SMTP_MILTERS", "127.0.0.1:8891", "a milter is inet:host:port")
        self.assertBad("SMTP_MILTERS", "inet:127.0.0.1", "has no port")
        self.assertBad("SMTP_MILTERS", "unix:run/x", "absolute")
        self.assertBad("SMTP_MILTERS", "inet:127.0.0.1:1;timeout=-1", "positive")
        self.assertBad("SMTP_MILTERS", "inet:127.0.0.1:1;default=discard", "not one of")
        self.assertBad("SMTP_MILTERS", "inet:127.0.0.1:1;scope=some", "not one of")
        self.assertBad("SMTP_MILTERS", "inet:127.0.0.1:1;colour=red", "options are")
        self.assertBad("SMTP_MILTERS", "inet:127.0.0.1:1;name=a b", "letters, digits")
        self.assertBad("SMTP_MILTERS", "inet:127.0.0.1:1,inet:127.0.0.1:1", "listed twice")
