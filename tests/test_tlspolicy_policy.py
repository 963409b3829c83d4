"""
Tests for L{gopherpost.tlspolicy.policy}'s bookkeeping: what a connection's
outcome records (TLS reports, metrics), the facts for the delivery log,
the explanations; the end-to-end behaviour is in
L{tests.test_tlspolicy_delivery}.
"""

from __future__ import annotations

from typing import NamedTuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.tlspolicy.certificates import CertificateVerdict, TLSARecord
from gopherpost.tlspolicy.connection import ClientTLSContexts
from gopherpost.tlspolicy.dane import ABSENT, SECURE, MXSecurity, TLSALookup
from gopherpost.tlspolicy.metrics import TLSPolicyMetrics
from gopherpost.tlspolicy.policy import DestinationTLS, HostTLSPolicy, Recorder, TLSFacts
from gopherpost.tlspolicy.reportstore import TLSReportStore
from gopherpost.tlspolicy.results import CERTIFICATE_EXPIRED, STARTTLS_NOT_SUPPORTED


class Result(NamedTuple):
    failureStage: str | None = None
    address: str = "192.0.2.1"
    tlsUsed: bool = False


class FakeDANE:
    def __init__(self, lookup: TLSALookup) -> None:
        self.lookup = lookup

    def tlsa(self, host: str, port: int) -> Deferred[TLSALookup]:
        return succeed(self.lookup)


class PolicyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1796126400.0)
        self.reports = TLSReportStore(self.mktemp(), self.clock)
        self.reports.load()
        self.metrics = TLSPolicyMetrics()
        self.recorder = Recorder(self.reports, self.metrics)

    def destination(self, configured: str = "verify", **kw: object) -> DestinationTLS:
        return DestinationTLS(
            "example.test",
            25,
            configured,
            ClientTLSContexts(),
            self.recorder,
            **kw,  # type: ignore[arg-type]
        )

    def host(self, destination: DestinationTLS, name: str = "mx.example.test") -> HostTLSPolicy:
        return self.successResultOf(destination.forHost(name))

    def counts(self) -> tuple[int, list[str]]:
        [(_, day)] = list(self.reports.domains(self.reports.today))
        [counts] = day.policies.values()
        return counts.successes, [d.resultType for d in counts.failures]

    def test_facts(self) -> None:
        self.assertEqual(str(TLSFacts("dane", True, True)), "dane verified")
        self.assertEqual(str(TLSFacts("may", True, False)), "may unverified")
        self.assertEqual(str(TLSFacts("verify", False, False, STARTTLS_NOT_SUPPORTED)), "verify")

    def test_beforeTLSNothingRecorded(self) -> None:
        """
        A connection that failed before EHLO says nothing about TLS.
        """
        host = self.host(self.destination())
        for stage in ("connect", "greeting", "EHLO"):
            self.assertIsNone(host.connectionEnded(Result(stage)))
        self.assertEqual(list(self.reports.domains(self.reports.today)), [])

    def test_once(self) -> None:
        """
        Only the first call counts.
        """
        host = self.host(self.destination())
        facts = host.connectionEnded(Result("MAIL"))
        self.assertEqual(facts, TLSFacts("verify", False, False, STARTTLS_NOT_SUPPORTED))
        self.assertEqual(host.connectionEnded(Result()), facts)
        self.assertEqual(self.counts(), (0, [STARTTLS_NOT_SUPPORTED]))
        self.assertEqual(
            self.metrics.value(
                "smtp_outbound_tls_sessions_total", {"policy": "verify", "result": "failure"}
            ),
            1,
        )

    def test_policyNone(self) -> None:
        host = self.host(self.destination("none"))
        self.assertIsNone(host.connectionEnded(Result()))

    def test_verdicts(self) -> None:
        """
        A finished handshake with a good verdict is a verified success; a
        bad one records its type.
        """
        host = self.host(self.destination())
        observation = host.observation
        observation.attempted = observation.completed = True
        observation.verdict = CertificateVerdict(True)
        self.assertEqual(
            host.connectionEnded(Result(tlsUsed=True)),
            TLSFacts("verify", True, True),
        )
        other = self.host(self.destination())
        observation = other.observation
        observation.attempted = observation.completed = True
        observation.verdict = CertificateVerdict(False, CERTIFICATE_EXPIRED, "expired")
        facts = other.connectionEnded(Result("TLS"))
        self.assertEqual(facts, TLSFacts("verify", True, False, CERTIFICATE_EXPIRED))
        self.assertEqual(self.counts(), (1, [CERTIFICATE_EXPIRED]))

    def test_explain(self) -> None:
        """
        Only a required TLS that was not offered gets an explanation.
        """
        key = TLSARecord(3, 1, 1, b"\x00" * 32)
        mx = MXSecurity(True, frozenset(["mx.example.test"]))
        dane = self.destination(mx=mx, dane=FakeDANE(TLSALookup(SECURE, (key,))))
        host = self.host(dane)
        self.assertIn(
            "mx.example.test does not offer STARTTLS, which DANE (_25._tcp.mx.example.test TLSA)",
            host.explain(Result("TLS")) or "",
        )
        self.assertIsNone(host.explain(Result("MAIL")))
        plain = self.host(self.destination())
        self.assertIsNone(plain.explain(Result("TLS")))

    def test_notAnMXOfTheValidatedRecords(self) -> None:
        mx = MXSecurity(True, frozenset(["mx.example.test"]))
        destination = self.destination(mx=mx, dane=FakeDANE(TLSALookup(ABSENT)))
        host = self.host(destination, "evil.test")
        self.assertFalse(host.allowed)
        self.assertIn("DNSSEC-validated MX", host.refusal)
        self.assertTrue(self.host(destination).allowed)

    def test_relaxedNotRecorded(self) -> None:
        destination = self.destination()
        host = self.successResultOf(destination.forHost("mx.example.test", relaxed=True))
        host.connectionEnded(Result("MAIL"))
        self.assertEqual(list(self.reports.domains(self.reports.today)), [])
