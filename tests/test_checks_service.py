"""
Tests for L{gopherpost.checks.service}: the checks built from the settings.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial import unittest

from gopherpost.checks.failover import FailoverStore
from gopherpost.checks.policies import (
    BanPolicy,
    DNSBLPolicy,
    GreylistPolicy,
    MessageAuthenticationPolicy,
    RateLimitPolicy,
    SPFPolicy,
)
from gopherpost.checks.service import STATE_FILE, makeMXChecks
from gopherpost.checks.store import LocalStore
from gopherpost.config import ConfigError, settingsFromEnvironment


def settings(**env: str):
    env.setdefault("SMTP_HOSTNAME", "mx.gopher.test")
    return settingsFromEnvironment(env, checkFiles=False)


class MakeMXChecksTests(unittest.TestCase):
    def setUp(self) -> None:
        self.state = self.mktemp()
        os.makedirs(self.state)

    def build(self, **env: str):
        checks = makeMXChecks(settings(**env), None, reactor, self.state)
        checks.startService()
        self.addCleanup(checks.stopService)
        return checks

    def test_defaults(self) -> None:
        checks = self.build()
        self.assertEqual(
            [type(p) for p in checks.policies],
            [BanPolicy, RateLimitPolicy, SPFPolicy, MessageAuthenticationPolicy],
        )
        self.assertIs(checks.violations, checks.policies[0])
        self.assertIsInstance(checks.store, LocalStore)
        self.assertTrue(os.path.exists(os.path.join(self.state, STATE_FILE)))

    def test_everything(self) -> None:
        checks = self.build(
            SMTP_DNSBL_ZONES="bl.test", SMTP_GREYLIST="true", SMTP_REDIS_URL="redis://127.0.0.1:1"
        )
        self.assertEqual(
            [type(p) for p in checks.policies],
            [
                BanPolicy,
                RateLimitPolicy,
                DNSBLPolicy,
                SPFPolicy,
                GreylistPolicy,
                MessageAuthenticationPolicy,
            ],
        )
        self.assertIsInstance(checks.store, FailoverStore)

    def test_nothing(self) -> None:
        checks = self.build(
            SMTP_SENDER_AUTH="false",
            SMTP_BAN_THRESHOLD="0",
            SMTP_RATE_CONNECTIONS="0",
            SMTP_RATE_MESSAGES="0",
            SMTP_RATE_RECIPIENTS="0",
            SMTP_RATE_USER_MESSAGES="0",
        )
        self.assertEqual(checks.policies, [])
        self.assertIsNone(checks.violations)

    def test_unusableStateDirectory(self) -> None:
        """
        A state directory that cannot hold the database fails at start-up
        with the variable's name.
        """
        with self.assertRaises(ConfigError) as caught:
            makeMXChecks(settings(), None, reactor, os.path.join(self.state, "missing"))
        self.assertEqual(caught.exception.variable, "SMTP_QUEUE_PATH")
