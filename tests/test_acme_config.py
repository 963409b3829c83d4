"""
Tests for the ACME settings in L{gopherpost.config} (C{SMTP_ACME_*}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.config import (
    LETS_ENCRYPT_DIRECTORY,
    ConfigError,
    Settings,
    settingsFromEnvironment,
)

ON = {"SMTP_ACME_DOMAINS": "mx.example.test", "SMTP_ACME_AGREE_TOS": "true"}


def settings(**environ: str) -> Settings:
    environ.setdefault("SMTP_HOSTNAME", "mx.example.test")
    return settingsFromEnvironment(environ, checkFiles=False)


class ACMESettingsTests(SynchronousTestCase):
    def assertProblem(self, variable: str, fragment: str, **environ: str) -> None:
        with self.assertRaises(ConfigError) as caught:
            settings(**environ)
        self.assertEqual(caught.exception.variable, variable, str(caught.exception))
        self.assertIn(fragment, caught.exception.problem)
        self.assertNotIn("\n", str(caught.exception))

    def test_defaults(self) -> None:
        """
        Off by default; Let's Encrypt's production directory; port 80.
        """
        s = settings()
        self.assertFalse(s.acmeEnabled)
        self.assertEqual(
            (s.acmeDomains, s.acmeEmail, s.acmeDirectory, s.acmeAgreeTOS),
            ((), None, LETS_ENCRYPT_DIRECTORY, False),
        )
        listen = s.acmeChallengeListen
        self.assertEqual(
            (listen.variable, listen.description, listen.kind, listen.port, listen.proxy),
            ("SMTP_ACME_CHALLENGE_LISTEN", "tcp:80", "tcp", 80, False),
        )
        self.assertEqual(LETS_ENCRYPT_DIRECTORY, "https://acme-v02.api.letsencrypt.org/directory")
        self.assertIsNone(s.acmeDirectoryCA)

    def test_values(self) -> None:
        s = settings(
            SMTP_ACME_DOMAINS="MX.Example.TEST, smtp.example.test,mx.example.test.",
            SMTP_ACME_EMAIL="mailto:Postmaster@Example.TEST",
            SMTP_ACME_DIRECTORY="https://acme-staging-v02.api.letsencrypt.org/directory",
            SMTP_ACME_AGREE_TOS="true",
            SMTP_ACME_CHALLENGE_LISTEN="tcp6:8080:interface=\\:\\:1",
            SMTP_ACME_DIRECTORY_CA="/etc/ssl/private-ca.pem",
        )
        self.assertTrue(s.acmeEnabled)
        self.assertEqual(s.acmeDomains, ("mx.example.test", "smtp.example.test"))
        self.assertEqual(s.acmeEmail, "Postmaster@example.test")
        self.assertEqual(s.acmeDirectory, "https://acme-staging-v02.api.letsencrypt.org/directory")
        self.assertEqual(
            (s.acmeChallengeListen.port, s.acmeChallengeListen.interface), (8080, "::1")
        )
        self.assertEqual(s.acmeDirectoryCA, "/etc/ssl/private-ca.pem")

    def test_challengeListen(self) -> None:
        """
        An endpoint string like the SMTP listeners' (tcp:, tcp6:, systemd:,
        haproxy:), parsed at start-up.
        """
        for good, kind, port, proxy in (
            ("tcp:80", "tcp", 80, False),
            ("tcp:port=80", "tcp", 80, False),
            ("tcp:80:interface=192.0.2.1:backlog=10", "tcp", 80, False),
            ("tcp6:80", "tcp", 80, False),
            ("haproxy:tcp:8402:interface=127.0.0.1", "tcp", 8402, True),
            ("systemd:domain=INET6:index=1", "systemd", 0, False),
        ):
            spec = settings(SMTP_ACME_CHALLENGE_LISTEN=good).acmeChallengeListen
            self.assertEqual(
                (spec.description, spec.kind, spec.port, spec.proxy), (good, kind, port, proxy)
            )
        for bad, fragment in (
            ("80", "is not supported"),
            ("unix:/run/x", "is not supported"),
            ("tcp:", "needs a port"),
            ("tcp:http", "is not a number"),
            ("tcp:80:interface=example.test", "is not an IP address"),
            ("tcp:80:colour=blue", "has no option 'colour'"),
        ):
            self.assertProblem(
                "SMTP_ACME_CHALLENGE_LISTEN", fragment, SMTP_ACME_CHALLENGE_LISTEN=bad
            )

    def test_badValues(self) -> None:
        for variable, value, fragment in (
            ("SMTP_ACME_DOMAINS", "*.example.test", "wildcard needs DNS-01"),
            ("SMTP_ACME_DOMAINS", "192.0.2.1", "not IP addresses"),
            ("SMTP_ACME_DOMAINS", "mx", "not a fully qualified host name"),
            ("SMTP_ACME_DOMAINS", "bad_name!.test", "not a valid host name"),
            ("SMTP_ACME_EMAIL", "postmaster", "not an email address"),
            ("SMTP_ACME_EMAIL", "a b@example.test", "not an email address"),
            ("SMTP_ACME_DIRECTORY", "http://ca.example.test/dir", "https:// URL"),
            ("SMTP_ACME_DIRECTORY", "letsencrypt", "https:// URL"),
            ("SMTP_ACME_DIRECTORY", "https://ca.example.test:0/dir", "port 0"),
            ("SMTP_ACME_AGREE_TOS", "yes", "not a boolean"),
        ):
            self.assertProblem(variable, fragment, **{variable: value})

    def test_tooManyNames(self) -> None:
        names = ",".join(f"n{i}.example.test" for i in range(101))
        self.assertProblem("SMTP_ACME_DOMAINS", "at most 100", SMTP_ACME_DOMAINS=names)

    def test_termsMustBeAgreed(self) -> None:
        self.assertProblem(
            "SMTP_ACME_AGREE_TOS",
            "must be true to use ACME",
            SMTP_ACME_DOMAINS="mx.example.test",
        )
        self.assertProblem(
            "SMTP_ACME_AGREE_TOS",
            "must be true",
            SMTP_ACME_DOMAINS="mx.example.test",
            SMTP_ACME_AGREE_TOS="false",
        )

    def test_noStaticCertificate(self) -> None:
        """
        With ACME on, SMTP_TLS_CERT and SMTP_TLS_KEY must be empty.
        """
        self.assertProblem(
            "SMTP_TLS_CERT",
            "must be empty when SMTP_ACME_DOMAINS is set",
            SMTP_TLS_CERT="/etc/ssl/mx.pem",
            SMTP_TLS_KEY="/etc/ssl/mx.key",
            **ON,
        )
        self.assertEqual(settings(SMTP_TLS_CERT="", SMTP_TLS_KEY="", **ON).tlsCert, None)

    def test_tlsNeeded(self) -> None:
        self.assertProblem("SMTP_TLS_DISABLE", "SMTP_ACME_DOMAINS", SMTP_TLS_DISABLE="true", **ON)

    def test_oneProcess(self) -> None:
        self.assertProblem("SMTP_WORKERS", "SMTP_WORKERS=1", SMTP_WORKERS="2", **ON)

    def test_caFileChecked(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            settingsFromEnvironment(
                {"SMTP_HOSTNAME": "mx.example.test", "SMTP_ACME_DIRECTORY_CA": "/nonexistent.pem"}
            )
        self.assertEqual(caught.exception.variable, "SMTP_ACME_DIRECTORY_CA")
