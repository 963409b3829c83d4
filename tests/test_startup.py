"""
Tests for L{gopherpost.startup}: the start-up line and the warnings about
likely mistakes.
"""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.configsource import ConfigSource, LoadedEnvironment
from gopherpost.inbound.roles import SMTP, SUBMISSIONS
from gopherpost.listeners.endpoints import parseListeners
from gopherpost.startup import configurationWarnings, relayMode, startupLine, tlsMode
from tests.support.inbound import testSettings


class WarningsTests(SynchronousTestCase):
    """
    One line per likely mistake.
    """

    def test_none(self) -> None:
        """
        A sound configuration has no warnings.
        """
        settings = testSettings("/q")
        self.assertEqual(
            configurationWarnings(LoadedEnvironment({"SMTP_PORT": "25"}), settings), []
        )

    def test_unknownVariable(self) -> None:
        """
        An C{SMTP_*} name GopherPost does not know, with the closest known
        name and, from the env file, where it is.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("SMTP_BANNER=x\nSMTP_PROT=2525\n")
        loaded = ConfigSource({"SMTP_NOTHING_LIKE_IT": "1", "HOME": "/"}, envFile=path).load()
        warnings = configurationWarnings(loaded, testSettings("/q"))
        self.assertEqual(
            warnings,
            [
                "SMTP_NOTHING_LIKE_IT: unknown variable",
                f"SMTP_PROT: unknown variable; did you mean SMTP_PORT? (in the env file "
                f"{loaded.envFile}, line 2)",
            ],
        )

    def test_emptyAllowList(self) -> None:
        """
        Without any allowed network or host every client is rejected.
        """
        settings = testSettings("/q", allowNetworks=(), allowHosts=())
        [warning] = configurationWarnings(LoadedEnvironment({}), settings)
        self.assertIn("every client will be rejected", warning)
        hosts = testSettings("/q", allowNetworks=(), allowHosts=("client.test",))
        self.assertEqual(configurationWarnings(LoadedEnvironment({}), hosts), [])

    def test_debugHealthOnEveryInterface(self) -> None:
        """
        With SMTP_DEBUG on, a health endpoint on every interface streams
        addresses to anyone: a warning; on loopback, none.
        """
        for address in (":8080", "0.0.0.0:8080", "[::]:8080"):
            settings = testSettings("/q", debug=True, healthDisable=False, healthAddr=address)
            [warning] = configurationWarnings(LoadedEnvironment({}), settings)
            self.assertIn(
                "SMTP_DEBUG=true and the health endpoint listens on every interface", warning
            )
        local = testSettings("/q", debug=True, healthDisable=False, healthAddr="127.0.0.1:8080")
        self.assertEqual(configurationWarnings(LoadedEnvironment({}), local), [])
        quiet = testSettings("/q", debug=False, healthDisable=False, healthAddr=":8080")
        self.assertEqual(configurationWarnings(LoadedEnvironment({}), quiet), [])

    def test_envFileProblems(self) -> None:
        """
        Lines of the env file that do not parse are warnings too.
        """
        loaded = LoadedEnvironment({}, problems=("f, line 2: cannot parse 'x'; ignored",))
        self.assertEqual(
            configurationWarnings(loaded, testSettings("/q")),
            ["f, line 2: cannot parse 'x'; ignored"],
        )


class StartupLineTests(SynchronousTestCase):
    """
    What runs, in one line.
    """

    def test_line(self) -> None:
        """
        Version, host name, listeners with roles, spool, relay mode, TLS
        mode.
        """
        from gopherpost import __version__

        settings = testSettings("/q", allowNetworks=(ipaddress.ip_network("127.0.0.1/32"),))
        [smtp] = parseListeners("SMTP_LISTEN", "tcp:2525")
        [submissions] = parseListeners("SMTP_SUBMISSIONS_LISTEN", "tcp:465")
        line = startupLine(settings, [(SMTP, smtp), (SUBMISSIONS, submissions)], "/var/spool/gp")
        self.assertEqual(
            line,
            f"GopherPost {__version__} started as mx.gopherpost.test: SMTP on tcp:2525 (smtp), "
            "tcp:465 (submissions); spool /var/spool/gp; relay MX (port 25), outbound TLS "
            "verify; inbound TLS off",
        )
        workers = testSettings("/q", workers=2)
        self.assertIn("(smtp) in 2 workers;", startupLine(workers, [(SMTP, smtp)], "/q"))

    def test_modes(self) -> None:
        """
        Smarthost or MX; a configured or generated certificate, or none.
        """
        self.assertEqual(
            relayMode(testSettings("/q", relayHost=("relay.test", 587), outboundTLS="require")),
            "smarthost relay.test:587, outbound TLS require",
        )
        self.assertEqual(
            relayMode(testSettings("/q", relayHost=("::1", 25))),
            "smarthost [::1]:25, outbound TLS verify",
        )
        self.assertEqual(
            tlsMode(testSettings("/q", tlsDisable=False, tlsCert="/c.pem", tlsKey="/k.pem")),
            "certificate /c.pem",
        )
        self.assertEqual(
            tlsMode(testSettings("/q", tlsDisable=False)),
            "self-signed certificate for mx.gopherpost.test",
        )
