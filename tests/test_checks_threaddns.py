"""
Tests for L{gopherpost.checks.threaddns}.
"""

from __future__ import annotations

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from gopherpost.checks.threaddns import DNSUnavailable, ThreadDNS
from gopherpost.dns import PermanentDNSError, TemporaryDNSError
from tests.support.mxchecks import InlineCallbacks


class _Resolver:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    def lookupRecords(self, name: str, rdtype: str, lifetime: float) -> defer.Deferred:
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        if self.answer is None:
            return defer.Deferred()
        return defer.succeed(self.answer)


class ThreadDNSTests(unittest.TestCase):
    def lookup(self, answer: object, timeout: float = 1.0) -> defer.Deferred:
        dns = ThreadDNS(_Resolver(answer), reactor, timeout=timeout)
        return threads.deferToThread(dns.records, "x.test", "TXT")

    @defer.inlineCallbacks
    def test_answer(self) -> InlineCallbacks:
        self.assertEqual((yield self.lookup(["r"])), ["r"])

    @defer.inlineCallbacks
    def test_noSuchName(self) -> InlineCallbacks:
        self.assertEqual((yield self.lookup(PermanentDNSError("x.test", "NXDOMAIN"))), [])

    def test_temporary(self) -> defer.Deferred:
        return self.assertFailure(
            self.lookup(TemporaryDNSError("x.test", "SERVFAIL")), DNSUnavailable
        )

    def test_noAnswerIsBounded(self) -> defer.Deferred:
        """
        A lookup that never completes fails after the timeout.
        """
        return self.assertFailure(self.lookup(None, timeout=0.1), DNSUnavailable)

    def test_closed(self) -> defer.Deferred:
        dns = ThreadDNS(_Resolver(["r"]), reactor)
        dns.close()
        return self.assertFailure(
            threads.deferToThread(dns.records, "x.test", "TXT"), DNSUnavailable
        )
