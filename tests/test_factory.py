"""
Tests for L{gopherpost.inbound.factory} and L{gopherpost.inbound.roles}:
the factory of each listener role, the shared connection limits.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.inbound.factory import ConnectionLimits, SMTPFactory, makeSMTPFactory
from gopherpost.inbound.roles import ROLES, SMTP, SUBMISSION, SUBMISSIONS
from gopherpost.spool import Spool
from tests.support.inbound import RecordingAudit, testSettings


class RoleTests(SynchronousTestCase):
    """
    The three roles.
    """

    def test_roles(self) -> None:
        """
        smtp, submission (TLS required) and submissions (implicit TLS).
        """
        self.assertEqual([r.name for r in ROLES], ["smtp", "submission", "submissions"])
        self.assertTrue(SUBMISSION.requireTLS and not SUBMISSION.implicitTLS)
        self.assertTrue(SUBMISSIONS.implicitTLS and not SMTP.requireTLS)


class LimitsTests(SynchronousTestCase):
    """
    L{ConnectionLimits}, shared by every role's factory.
    """

    def test_takeAndGive(self) -> None:
        """
        Slots in all and per address; 0 is unlimited.
        """
        limits = ConnectionLimits(2, 1)
        self.assertIsNone(limits.take("192.0.2.1"))
        self.assertEqual(limits.take("192.0.2.1")[0], "connection-limit-ip")  # type: ignore[index]
        self.assertIsNone(limits.take("192.0.2.2"))
        self.assertEqual(limits.take("192.0.2.3")[0], "connection-limit")  # type: ignore[index]
        limits.give("192.0.2.1")
        self.assertEqual(limits.count, 1)
        unlimited = ConnectionLimits(0, 0)
        for _ in range(100):
            self.assertIsNone(unlimited.take("192.0.2.1"))


class MakeFactoryTests(SynchronousTestCase):
    """
    L{makeSMTPFactory}, the entry point of the wiring.
    """

    def test_roles(self) -> None:
        """
        Each role gets its own chain; the limits can be shared.
        """
        settings = testSettings(self.mktemp())
        spool = Spool(settings.queuePath, Clock())
        spool.open()
        limits = ConnectionLimits(10, 5)
        factories = {
            role.name: makeSMTPFactory(
                settings, spool, RecordingAudit(), None, Clock(), None, role=role, limits=limits
            )
            for role in ROLES
        }
        for role in ROLES:
            factory = factories[role.name]
            self.assertIsInstance(factory, SMTPFactory)
            self.assertIs(factory.role, role)
            self.assertIs(factory.limits, limits)
            self.assertEqual(factory.sessionCount, 0)
            self.assertFalse(factory.listening)
        names = [p.name for p in factories["submission"].chain.policies]
        self.assertIn("require-tls", names)
        self.assertNotIn("require-tls", [p.name for p in factories["smtp"].chain.policies])
        factory = factories["smtp"]
        factory.startFactory()
        self.assertTrue(factory.listening)
        factory.stopFactory()
        self.assertFalse(factory.listening)
