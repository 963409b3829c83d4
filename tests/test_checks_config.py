"""
Tests for the MX checks' settings in L{gopherpost.config}.
"""

from __future__ import annotations

from twisted.trial import unittest

from gopherpost.config import ConfigError, redactURL, settingsFromEnvironment


def settings(**env: str):
    env.setdefault("SMTP_HOSTNAME", "mx.gopher.test")
    return settingsFromEnvironment(env, checkFiles=False)


class MXSettingsTests(unittest.TestCase):
    def test_defaults(self) -> None:
        s = settings()
        self.assertEqual(
            (s.senderAuth, s.spfReject, s.dmarcEnforce, s.arcTrustedSealers, s.dnsblZones),
            (True, "never", True, (), ()),
        )
        self.assertEqual(
            (s.rateConnections, s.rateMessages, s.rateRecipients, s.rateUserMessages),
            (600, 0, 0, 500),
        )
        self.assertEqual((s.greylist, s.greylistDelay, s.greylistAutoWhitelist), (False, 300.0, 5))
        self.assertEqual(
            (s.banThreshold, s.banWindow, s.banDuration, s.banMaxDuration),
            (10, 600.0, 600.0, 86400.0),
        )
        self.assertEqual((s.redisURL, s.redisPrefix), (None, "gopherpost:"))

    def test_values(self) -> None:
        s = settings(
            SMTP_SENDER_AUTH="false",
            SMTP_SPF_REJECT="fail",
            SMTP_DMARC_ENFORCE="false",
            SMTP_ARC_TRUSTED_SEALERS="Lists.Example.TEST, google.test",
            SMTP_DNSBL_ZONES="zen.spamhaus.test,bl.test.",
            SMTP_RATE_CONNECTIONS="0",
            SMTP_RATE_MESSAGES="5",
            SMTP_RATE_RECIPIENTS="7",
            SMTP_RATE_USER_MESSAGES="9",
            SMTP_GREYLIST="true",
            SMTP_GREYLIST_DELAY="60",
            SMTP_GREYLIST_AUTO_WHITELIST="0",
            SMTP_BAN_THRESHOLD="3",
            SMTP_BAN_WINDOW="120",
            SMTP_BAN_DURATION="30",
            SMTP_BAN_MAX_DURATION="3600",
            SMTP_REDIS_URL="rediss://:secret@redis.test:6380/2",
            SMTP_REDIS_PREFIX="site1:",
        )
        self.assertEqual(
            (s.senderAuth, s.spfReject, s.dmarcEnforce),
            (False, "fail", False),
        )
        self.assertEqual(s.arcTrustedSealers, ("lists.example.test", "google.test"))
        self.assertEqual(s.dnsblZones, ("zen.spamhaus.test", "bl.test"))
        self.assertEqual((s.rateConnections, s.rateMessages, s.rateRecipients), (0, 5, 7))
        self.assertEqual(s.rateUserMessages, 9)
        self.assertEqual((s.greylist, s.greylistDelay, s.greylistAutoWhitelist), (True, 60.0, 0))
        self.assertEqual((s.banThreshold, s.banWindow, s.banDuration), (3, 120.0, 30.0))
        self.assertEqual(s.banMaxDuration, 3600.0)
        self.assertEqual(
            (s.redisURL, s.redisPrefix), ("rediss://:secret@redis.test:6380/2", "site1:")
        )

    def test_errorsNameTheVariable(self) -> None:
        bad = {
            "SMTP_SENDER_AUTH": "yes",
            "SMTP_SPF_REJECT": "softfail",
            "SMTP_DMARC_ENFORCE": "1",
            "SMTP_ARC_TRUSTED_SEALERS": "not a domain",
            "SMTP_DNSBL_ZONES": "bl..test",
            "SMTP_RATE_CONNECTIONS": "-1",
            "SMTP_RATE_MESSAGES": "many",
            "SMTP_RATE_RECIPIENTS": "1.5",
            "SMTP_RATE_USER_MESSAGES": "x",
            "SMTP_GREYLIST": "on",
            "SMTP_GREYLIST_DELAY": "0",
            "SMTP_GREYLIST_AUTO_WHITELIST": "-2",
            "SMTP_BAN_THRESHOLD": "ten",
            "SMTP_BAN_WINDOW": "0",
            "SMTP_BAN_DURATION": "soon",
            "SMTP_BAN_MAX_DURATION": "10",
            "SMTP_REDIS_URL": "http://redis.test",
            "SMTP_REDIS_PREFIX": "has space",
        }
        for variable, value in bad.items():
            with self.assertRaises(ConfigError, msg=variable) as caught:
                settings(**{variable: value})
            self.assertEqual(caught.exception.variable, variable)

    def test_redisURLs(self) -> None:
        for url in (
            "redis://127.0.0.1:6379/0",
            "redis://h",
            "rediss://u:p@h:1/3",
            "unix:///run/r.sock",
        ):
            self.assertEqual(settings(SMTP_REDIS_URL=url).redisURL, url)
        for url in ("redis://:pw@h:99999", "redis://h/db", "redis://", "unix://"):
            self.assertRaises(ConfigError, settings, SMTP_REDIS_URL=url)

    def test_passwordNotInErrors(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            settings(SMTP_REDIS_URL="redis://user:hunter2@h/db")
        self.assertNotIn("hunter2", str(caught.exception))
        self.assertEqual(redactURL("rediss://:pw@h:1/0"), "rediss://:***@h:1/0")
