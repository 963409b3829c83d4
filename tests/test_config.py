"""
Tests for L{gopherpost.config}.
"""

from __future__ import annotations

import ipaddress
import os

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.config import (
    ConfigError,
    Settings,
    healthAddress,
    loadEnvironment,
    settingsFromEnvironment,
)


def settings(**environ: str) -> Settings:
    return settingsFromEnvironment(environ, defaultHostname=lambda: "host.test")


class DefaultsTests(SynchronousTestCase):
    """
    Unset variables take the reference's defaults.
    """

    def test_defaults(self) -> None:
        """
        The documented defaults.
        """
        s = settings()
        self.assertEqual(s.port, 2525)
        self.assertEqual(s.hostname, "host.test")
        self.assertEqual(s.banner, "GopherPost ready")
        self.assertFalse(s.debug)
        self.assertEqual(s.queuePath, "./data/spool")
        self.assertEqual((s.allowNetworks, s.allowHosts), ((), ()))
        self.assertTrue(s.requireLocalDomain)
        self.assertEqual(s.localDomains, ("host.test",))
        self.assertEqual(s.maxMessageSize, 10485760)
        self.assertEqual(s.maxRecipients, 100)
        self.assertEqual(s.commandTimeout, 300.0)
        self.assertEqual(healthAddress(s), ("", 8080))
        self.assertFalse(s.dkimEnabled)
        self.assertTrue(s.tlsEnabled)

    def test_values(self) -> None:
        """
        Set variables are parsed.
        """
        s = settings(
            SMTP_PORT="25",
            SMTP_HOSTNAME="MX.Example.Test",
            SMTP_LOCAL_DOMAINS="example.test, other.test",
            SMTP_ALLOW_NETWORKS="192.0.2.0/24, 2001:db8::/32,203.0.113.5",
            SMTP_ALLOW_HOSTS="relay.example.test,198.51.100.1",
            SMTP_MAX_MESSAGE_SIZE="20M",
            SMTP_DNS_SERVERS="127.0.0.1:5353,[::1]:53,192.0.2.53",
            SMTP_RELAY_HOST="smarthost.test:587",
            SMTP_DEBUG="true",
            SMTP_REQUIRE_LOCAL_DOMAIN="false",
        )
        self.assertEqual(s.port, 25)
        self.assertEqual(s.localDomains, ("mx.example.test", "example.test", "other.test"))
        self.assertTrue(s.isLocalDomain("Example.Test."))
        self.assertEqual(
            s.allowNetworks,
            (
                ipaddress.ip_network("192.0.2.0/24"),
                ipaddress.ip_network("2001:db8::/32"),
                ipaddress.ip_network("203.0.113.5/32"),
            ),
        )
        self.assertEqual(s.allowHosts, ("relay.example.test", "198.51.100.1"))
        self.assertEqual(s.maxMessageSize, 20 * 1024 * 1024)
        self.assertEqual(s.dnsServers, (("127.0.0.1", 5353), ("::1", 53), ("192.0.2.53", 53)))
        self.assertEqual(s.relayHost, ("smarthost.test", 587))
        self.assertTrue(s.debug)
        self.assertFalse(s.requireLocalDomain)

    def test_healthPortReplacesPort(self) -> None:
        """
        SMTP_HEALTH_PORT replaces only the port of SMTP_HEALTH_ADDR.
        """
        cases = [
            (":8080", ("", 9090)),
            ("127.0.0.1:8080", ("127.0.0.1", 9090)),
            ("localhost", ("localhost", 9090)),
            ("[::1]:8080", ("::1", 9090)),
        ]
        for addr, expected in cases:
            s = settings(SMTP_HEALTH_ADDR=addr, SMTP_HEALTH_PORT="9090")
            self.assertEqual(healthAddress(s), expected, addr)


class InvalidValueTests(SynchronousTestCase):
    """
    Every invalid value is an error naming the variable.
    """

    def assertInvalid(self, variable: str, value: str, **more: str) -> ConfigError:
        error = self.assertRaises(ConfigError, settings, **{variable: value}, **more)
        self.assertEqual(error.variable, variable)
        self.assertTrue(str(error).startswith(variable + ": "))
        self.assertNotIn("\n", str(error))
        return error

    def test_invalid(self) -> None:
        """
        Ports, booleans, CIDRs, sizes, durations, host names and choices.
        """
        self.assertInvalid("SMTP_PORT", "smtp")
        self.assertInvalid("SMTP_PORT", "70000")
        self.assertInvalid("SMTP_DEBUG", "yes")
        self.assertInvalid("SMTP_DEBUG", "True")
        self.assertInvalid("SMTP_TLS_DISABLE", "1")
        self.assertInvalid("SMTP_ALLOW_NETWORKS", "192.0.2.0/24,10.0.0.0/33")
        self.assertInvalid("SMTP_ALLOW_NETWORKS", "not-a-network")
        self.assertInvalid("SMTP_ALLOW_HOSTS", "bad host!")
        self.assertInvalid("SMTP_MAX_MESSAGE_SIZE", "ten")
        self.assertInvalid("SMTP_MAX_RECIPIENTS", "0")
        self.assertInvalid("SMTP_COMMAND_TIMEOUT", "-5")
        self.assertInvalid("SMTP_DNS_SERVERS", "resolver.test")
        self.assertInvalid("SMTP_HEALTH_PORT", "0")
        self.assertInvalid("SMTP_HEALTH_ADDR", "[::1]:x")
        self.assertInvalid("SMTP_OUTBOUND_TLS", "sometimes")
        self.assertInvalid("SMTP_LISTEN_ADDR", "everywhere")

    def test_tlsFiles(self) -> None:
        """
        A TLS file that does not exist is an error; cert and key go together.
        """
        self.assertInvalid(
            "SMTP_TLS_CERT", "/nonexistent/cert.pem", SMTP_TLS_KEY="/nonexistent/key.pem"
        )
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("x")
        self.assertInvalid("SMTP_TLS_KEY", "", SMTP_TLS_CERT=path)

    def test_dkimNeedsSelector(self) -> None:
        """
        Any SMTP_DKIM_* turns DKIM on, and then the selector is required.
        """
        self.assertInvalid("SMTP_DKIM_SELECTOR", "", SMTP_DKIM_DOMAIN="example.test")


class DotenvTests(SynchronousTestCase):
    """
    The C{.env} file.
    """

    def test_environmentWins(self) -> None:
        """
        A variable set in the environment wins over C{.env}, even when empty.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("SMTP_PORT=2626\nSMTP_BANNER=from dotenv\nSMTP_HOSTNAME=dotenv.test\n")
        merged = loadEnvironment({"SMTP_BANNER": "", "SMTP_HOSTNAME": "env.test"}, path)
        self.assertEqual(merged["SMTP_PORT"], "2626")
        self.assertEqual(merged["SMTP_BANNER"], "")
        self.assertEqual(merged["SMTP_HOSTNAME"], "env.test")

    def test_missingFile(self) -> None:
        """
        Without a C{.env} file only the environment counts.
        """
        self.assertEqual(
            loadEnvironment({"A": "1"}, os.path.join(self.mktemp(), ".env")), {"A": "1"}
        )


class ListenerSettingsTests(SynchronousTestCase):
    """
    C{SMTP_LISTEN}, C{SMTP_SUBMISSION_LISTEN} and C{SMTP_SUBMISSIONS_LISTEN}.
    """

    def test_defaults(self) -> None:
        """
        Unset, the SMTP listener is the default one (L{None}: from
        C{SMTP_LISTEN_ADDR}/C{SMTP_PORT}) and the submission ports are off.
        """
        s = settings()
        self.assertIsNone(s.listen)
        self.assertEqual((s.submissionListen, s.submissionsListen), ((), ()))
        self.assertIsNone(settings(SMTP_LISTEN=" ").listen)

    def test_parsed(self) -> None:
        """
        Each variable is a list of endpoint strings, each spec naming its
        variable.
        """
        s = settings(
            SMTP_LISTEN="tcp:25,haproxy:tcp:10025:interface=127.0.0.1",
            SMTP_SUBMISSION_LISTEN="tcp6:587",
            SMTP_SUBMISSIONS_LISTEN="systemd:domain=INET6:index=0",
        )
        assert s.listen is not None
        self.assertEqual([spec.port for spec in s.listen], [25, 10025])
        self.assertEqual([spec.proxy for spec in s.listen], [False, True])
        self.assertEqual(s.submissionListen[0].variable, "SMTP_SUBMISSION_LISTEN")
        self.assertEqual(s.submissionsListen[0].kind, "systemd")

    def test_none(self) -> None:
        """
        C{SMTP_LISTEN=none}: no relay/MX listener, when another is set.
        """
        s = settings(SMTP_LISTEN="none", SMTP_SUBMISSION_LISTEN="tcp:587")
        self.assertEqual(s.listen, ())
        error = self.assertRaises(ConfigError, settings, SMTP_LISTEN="none")
        self.assertEqual(error.variable, "SMTP_LISTEN")
        self.assertIn("nothing to listen on", error.problem)

    def assertInvalid(self, variable: str, fragment: str, **environ: str) -> None:
        error = self.assertRaises(ConfigError, settings, **environ)
        self.assertEqual(error.variable, variable)
        self.assertIn(fragment, error.problem)
        self.assertNotIn("\n", str(error))

    def test_invalidEndpoint(self) -> None:
        """
        An endpoint string that does not parse names its variable and item.
        """
        self.assertInvalid("SMTP_LISTEN", "'tcp:x'", SMTP_LISTEN="tcp:25,tcp:x")
        self.assertInvalid(
            "SMTP_SUBMISSION_LISTEN", "not supported", SMTP_SUBMISSION_LISTEN="unix:/x"
        )
        self.assertInvalid("SMTP_SUBMISSIONS_LISTEN", "port", SMTP_SUBMISSIONS_LISTEN="tcp:")

    def test_tlsRolesNeedTLS(self) -> None:
        """
        Submission (STARTTLS required) and submissions (implicit TLS) cannot
        run with C{SMTP_TLS_DISABLE=true}.
        """
        self.assertInvalid(
            "SMTP_SUBMISSION_LISTEN",
            "SMTP_TLS_DISABLE",
            SMTP_SUBMISSION_LISTEN="tcp:587",
            SMTP_TLS_DISABLE="true",
        )
        self.assertInvalid(
            "SMTP_SUBMISSIONS_LISTEN",
            "SMTP_TLS_DISABLE",
            SMTP_SUBMISSIONS_LISTEN="tcp:465",
            SMTP_TLS_DISABLE="true",
        )

    def test_twice(self) -> None:
        """
        The same address and port, or the same inherited socket, in two
        places is an error naming the second.
        """
        self.assertInvalid(
            "SMTP_SUBMISSION_LISTEN",
            "also in SMTP_LISTEN",
            SMTP_LISTEN="tcp:2525",
            SMTP_SUBMISSION_LISTEN="tcp:2525",
        )
        self.assertInvalid(
            "SMTP_LISTEN", "listed twice", SMTP_LISTEN="systemd:index=0,systemd:index=0"
        )
        self.assertInvalid(
            "SMTP_SUBMISSIONS_LISTEN",
            "same listener as 'tcp:465:interface=127.0.0.1' in SMTP_SUBMISSION_LISTEN",
            SMTP_SUBMISSION_LISTEN="tcp:465:interface=127.0.0.1",
            SMTP_SUBMISSIONS_LISTEN="haproxy:tcp:port=465:interface=127.0.0.1",
        )


class HealthAddressTests(SynchronousTestCase):
    """
    C{SMTP_HEALTH_ADDR} must parse: an address with a port.
    """

    def test_noPort(self) -> None:
        """
        A value without a port does not parse (e.g. C{nonsense}), unless
        C{SMTP_HEALTH_PORT} gives the port.
        """
        for value in ("nonsense", "127.0.0.1", "::1"):
            error = self.assertRaises(ConfigError, settings, SMTP_HEALTH_ADDR=value)
            self.assertEqual(error.variable, "SMTP_HEALTH_ADDR")
            self.assertIn("has no port", error.problem)
        self.assertEqual(
            healthAddress(settings(SMTP_HEALTH_ADDR="nonsense", SMTP_HEALTH_PORT="9090")),
            ("nonsense", 9090),
        )

    def test_disabled(self) -> None:
        """
        With the HTTP server disabled the address is not looked at.
        """
        settings(SMTP_HEALTH_ADDR="nonsense", SMTP_HEALTH_DISABLE="true")

    def test_valid(self) -> None:
        """
        C{host:port}, C{:port}, C{[v6]:port}.
        """
        for value, expected in (
            ("metrics.test:8081", ("metrics.test", 8081)),
            (":9100", ("", 9100)),
            ("[::1]:8080", ("::1", 8080)),
        ):
            self.assertEqual(healthAddress(settings(SMTP_HEALTH_ADDR=value)), expected)


class OpenRelayTests(SynchronousTestCase):
    """
    Start-up refuses relay networks that cover everyone.
    """

    def assertOpenRelay(self, **environ: str) -> ConfigError:
        error = self.assertRaises(ConfigError, settings, **environ)
        self.assertEqual(error.variable, "SMTP_RELAY_NETWORKS")
        self.assertIn("open relay", error.problem)
        self.assertNotIn("\n", str(error))
        return error

    def test_explicit(self) -> None:
        """
        C{0.0.0.0/0}, C{::/0}, the IPv4-mapped space, and networks that
        together cover everything.
        """
        for value in (
            "0.0.0.0/0",
            "::/0",
            "127.0.0.1/32,::/0",
            "::ffff:0:0/96",
            "0.0.0.0/1,128.0.0.0/1",
            "0.0.0.0/2,64.0.0.0/2,128.0.0.0/1,10.0.0.0/8",
            "::/1,8000::/1",
            "0.0.0.0/1,::ffff:128.0.0.0/97",
        ):
            self.assertOpenRelay(SMTP_RELAY_NETWORKS=value)

    def test_byDefault(self) -> None:
        """
        Unset, the relay networks are the allow-list's: an allow-list of
        everyone is refused, and the message says how to fix it.
        """
        error = self.assertOpenRelay(SMTP_ALLOW_NETWORKS="0.0.0.0/0,::/0")
        self.assertIn("SMTP_ALLOW_NETWORKS", error.problem)
        self.assertIn("set SMTP_RELAY_NETWORKS", error.problem)

    def test_mxRole(self) -> None:
        """
        The MX role: everyone may connect, only localhost may relay.
        """
        s = settings(SMTP_ALLOW_NETWORKS="0.0.0.0/0,::/0", SMTP_RELAY_NETWORKS="127.0.0.1/32")
        self.assertEqual(s.effectiveRelayNetworks, (ipaddress.ip_network("127.0.0.1/32"),))

    def test_notEverything(self) -> None:
        """
        Large networks that leave some addresses out are not refused.
        """
        for value in ("0.0.0.0/1", "0.0.0.0/1,128.0.0.0/2", "::/1", "10.0.0.0/8,2000::/3"):
            settings(SMTP_RELAY_NETWORKS=value)
