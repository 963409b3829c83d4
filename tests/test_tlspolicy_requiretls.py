"""
Tests for L{gopherpost.tlspolicy.requiretls}: the outbound REQUIRETLS
checks (RFC 8689).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.tlspolicy.connection import ClientTLSContexts
from gopherpost.tlspolicy.policy import DestinationTLS
from gopherpost.tlspolicy.requiretls import (
    finalFailure,
    hostRefusal,
    nextHopRefusal,
    requiresTLS,
    tlsRequiredNo,
)
from gopherpost.tlspolicy.sts import parsePolicy

ENFORCE = b"version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n"
TESTING = ENFORCE.replace(b"enforce", b"testing")


class RequireTLSTests(SynchronousTestCase):
    def destination(self, policy: bytes | None, configured: str = "verify") -> DestinationTLS:
        sts = None if policy is None else parsePolicy(policy)
        return DestinationTLS("example.test", 25, configured, ClientTLSContexts(), None, sts=sts)

    def host(self, destination: DestinationTLS, name: str = "mx.example.test") -> object:
        return self.successResultOf(destination.forHost(name, requireTLS=True))

    def test_flag(self) -> None:
        self.assertTrue(requiresTLS({"requiretls": True}))
        self.assertFalse(requiresTLS({}))
        self.assertFalse(requiresTLS(None))

    def test_mtaSTSQualifies(self) -> None:
        """
        An MTA-STS host qualifies, in testing mode too.
        """
        for policy in (ENFORCE, TESTING):
            self.assertIsNone(hostRefusal(self.host(self.destination(policy))))

    def test_noPolicy(self) -> None:
        """
        Without DANE or MTA-STS (even with C{verify}) a host does not.
        """
        refusal = hostRefusal(self.host(self.destination(None)))
        assert refusal is not None
        self.assertTrue(refusal.startswith("5.7.30 REQUIRETLS: mx.example.test"))

    def test_refusedHost(self) -> None:
        refusal = hostRefusal(self.host(self.destination(ENFORCE), "other.example.test"))
        assert refusal is not None
        self.assertIn("not an MX host the MTA-STS policy", refusal)

    def test_nextHop(self) -> None:
        self.assertIsNone(nextHopRefusal("mx", {"REQUIRETLS": ()}, True))
        self.assertIn("does not support REQUIRETLS", nextHopRefusal("mx", {}, True) or "")
        self.assertIn("not under TLS", nextHopRefusal("mx", {"REQUIRETLS": ()}, False) or "")

    def test_finalFailure(self) -> None:
        self.assertEqual(
            finalFailure("example.test", "5.7.30 REQUIRETLS: mx does not support REQUIRETLS"),
            "5.7.30 REQUIRETLS: no mail exchanger of example.test qualifies "
            "(REQUIRETLS: mx does not support REQUIRETLS)",
        )

    def test_tlsRequiredNo(self) -> None:
        self.assertTrue(tlsRequiredNo(b"Subject: x\r\nTLS-Required: No\r\n\r\nbody\r\n"))
        self.assertTrue(tlsRequiredNo(b"tls-required:no\n\nbody"))
        self.assertFalse(tlsRequiredNo(b"Subject: x\r\n\r\nTLS-Required: No\r\n"))
        self.assertFalse(tlsRequiredNo(b"TLS-Required: Yes\r\n\r\n"))
        self.assertFalse(tlsRequiredNo(b"X-TLS-Required: No\r\n\r\n"))

    def test_relaxed(self) -> None:
        """
        C{TLS-Required: No}: the MTA-STS policy is ignored.
        """
        destination = self.destination(ENFORCE)
        host = self.successResultOf(destination.forHost("other.example.test", relaxed=True))
        self.assertTrue(host.allowed)
        self.assertEqual((host.label, host.clientPolicy), ("may", "may"))
