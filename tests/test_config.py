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
