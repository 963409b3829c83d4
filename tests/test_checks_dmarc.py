"""
Tests for L{gopherpost.checks.dmarc} (policy records from a loopback zone)
and L{gopherpost.checks.psl}.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from gopherpost.checks.dkimverify import ARCResult, DKIMResult
from gopherpost.checks.dmarc import DMARCChecker, InvalidRecord, fromDomains, parseRecord
from gopherpost.checks.psl import PublicSuffixList, defaultListPath, loadPublicSuffixList
from gopherpost.checks.spf import SPFResult
from tests.support.mxchecks import InlineCallbacks, startCheckEnvironment


def spf(result: str, domain: str) -> SPFResult:
    return SPFResult(result, "mailfrom", domain, f"bounce@{domain}", "")


def dkim(result: str, domain: str) -> DKIMResult:
    return DKIMResult(result, domain, "sel", "abcdefgh", "rsa-sha256")


class PublicSuffixListTests(unittest.TestCase):
    """
    The list's matching rules, and the list shipped with the system.
    """

    def setUp(self) -> None:
        self.psl = PublicSuffixList(
            ["// comment", "", "com", "uk", "co.uk", "*.kawasaki.jp", "!city.kawasaki.jp", "test"]
        )

    def test_organizationalDomain(self) -> None:
        cases = {
            "mail.example.com": "example.com",
            "a.b.example.co.uk": "example.co.uk",
            "example.com": "example.com",
            "com": "com",
            "x.y.kawasaki.jp": "x.y.kawasaki.jp",
            "www.city.kawasaki.jp": "city.kawasaki.jp",
            "Sub.Example.TEST.": "example.test",
            "a.b.unlisted": "b.unlisted",
        }
        for domain, expected in cases.items():
            self.assertEqual(self.psl.organizationalDomain(domain), expected, domain)

    def test_systemList(self) -> None:
        """
        A list is found on this machine without any download (Debian's
        publicsuffix package, or the publicsuffixlist package's copy), and
        it knows the multi-label suffixes.
        """
        self.assertIsNotNone(defaultListPath(), "no Public Suffix List installed")
        psl = loadPublicSuffixList()
        self.assertGreater(len(psl), 5000)
        self.assertEqual(psl.organizationalDomain("mail.example.co.uk"), "example.co.uk")
        self.assertEqual(psl.organizationalDomain("foo.github.io"), "foo.github.io")

    def test_bundledListWithoutDebian(self) -> None:
        """
        Without Debian's file, the copy the publicsuffixlist package ships
        is used when that package is installed (the PyPI install).
        """
        from gopherpost.checks import psl

        self.patch(psl, "DEBIAN_LIST", self.mktemp())
        try:
            import publicsuffixlist  # noqa: F401
        except ImportError:
            self.assertIsNone(defaultListPath())
            self.assertRaises(OSError, loadPublicSuffixList)
            return
        path = defaultListPath()
        assert path is not None
        self.assertTrue(path.endswith("public_suffix_list.dat"))
        self.assertEqual(
            loadPublicSuffixList(path).organizationalDomain("a.b.example.co.uk"), "example.co.uk"
        )


class RecordTests(unittest.TestCase):
    """
    L{parseRecord}.
    """

    def test_defaults(self) -> None:
        record = parseRecord("v=DMARC1; p=reject")
        self.assertEqual(
            (record.p, record.sp, record.pct, record.adkim, record.aspf),
            ("reject", None, 100, "r", "r"),
        )

    def test_tags(self) -> None:
        record = parseRecord("v=DMARC1;p=quarantine;sp=none;pct=25;adkim=s;aspf=s;rua=mailto:x@y")
        self.assertEqual(
            (record.p, record.sp, record.pct, record.adkim, record.aspf),
            ("quarantine", "none", 25, "s", "s"),
        )

    def test_ruaWithoutPolicy(self) -> None:
        self.assertEqual(parseRecord("v=DMARC1; rua=mailto:d@example.test").p, "none")

    def test_invalid(self) -> None:
        for text in ("p=reject; v=DMARC1", "v=DMARC1; p=bounce", "v=DMARC2; p=none"):
            self.assertRaises(InvalidRecord, parseRecord, text)

    def test_fromDomains(self) -> None:
        self.assertEqual(
            fromDomains(["Alice <alice@Example.TEST>", "bob@b.test, carol@example.test"]),
            ["example.test", "b.test"],
        )
        self.assertEqual(fromDomains(["undisclosed"]), [])


class DMARCTests(unittest.TestCase):
    """
    L{DMARCChecker.check} with records in a loopback zone.
    """

    def setUp(self) -> None:
        self.env = startCheckEnvironment(self, dnsTimeout=1.0)
        self.dns = self.env.dnsServer
        self.psl = PublicSuffixList(["test"])
        self.randomValue = 0.5
        self.checker = DMARCChecker(
            self.env.resolver,
            self.psl,
            trustedSealers=["lists.test"],
            random=lambda: self.randomValue,
        )

    def check(self, fromDomain: str = "example.test", spfResult=None, dkimResults=(), arc=None):
        return self.checker.check(
            [f"Alice <alice@{fromDomain}>"], spfResult, list(dkimResults), arc
        )

    @defer.inlineCallbacks
    def test_none(self) -> InlineCallbacks:
        result = yield self.check(spfResult=spf("fail", "example.test"))
        self.assertEqual((result.result, result.disposition), ("none", "none"))

    @defer.inlineCallbacks
    def test_rejectFailing(self) -> InlineCallbacks:
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject")
        result = yield self.check(
            spfResult=spf("pass", "other.test"), dkimResults=[dkim("pass", "other.test")]
        )
        self.assertEqual(
            (result.result, result.policy, result.disposition, result.domain),
            ("fail", "reject", "reject", "example.test"),
        )

    @defer.inlineCallbacks
    def test_passBySPF(self) -> InlineCallbacks:
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject")
        result = yield self.check(spfResult=spf("pass", "example.test"))
        self.assertEqual(
            (result.result, result.disposition, result.spfAligned), ("pass", "none", True)
        )

    @defer.inlineCallbacks
    def test_passByDKIM(self) -> InlineCallbacks:
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject")
        result = yield self.check(
            spfResult=spf("fail", "example.test"), dkimResults=[dkim("pass", "example.test")]
        )
        self.assertEqual((result.result, result.dkimAligned), ("pass", True))

    @defer.inlineCallbacks
    def test_quarantine(self) -> InlineCallbacks:
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=quarantine")
        result = yield self.check(spfResult=spf("softfail", "example.test"))
        self.assertEqual((result.result, result.disposition), ("fail", "quarantine"))

    @defer.inlineCallbacks
    def test_pctZero(self) -> InlineCallbacks:
        """
        pct=0: nothing is sampled, so reject becomes quarantine and
        quarantine becomes none (RFC 7489, 6.6.4).
        """
        self.randomValue = 0.0
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject; pct=0")
        self.dns.addTXT("_dmarc.q.test", "v=DMARC1; p=quarantine; pct=0")
        result = yield self.check()
        self.assertEqual((result.disposition, result.override), ("quarantine", "sampled_out"))
        result = yield self.check("q.test")
        self.assertEqual(result.disposition, "none")

    @defer.inlineCallbacks
    def test_pctSampled(self) -> InlineCallbacks:
        """
        pct=30 applies the policy to a message whose draw is below 30 %.
        """
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject; pct=30")
        self.randomValue = 0.29
        result = yield self.check()
        self.assertEqual(result.disposition, "reject")
        self.randomValue = 0.30
        result = yield self.check()
        self.assertEqual(result.disposition, "quarantine")

    @defer.inlineCallbacks
    def test_relaxedAlignment(self) -> InlineCallbacks:
        """
        Relaxed (the default): a signature of a subdomain of the same
        organizational domain aligns; strict (adkim=s) it does not.
        """
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject")
        self.dns.addTXT("_dmarc.strict.test", "v=DMARC1; p=reject; adkim=s; aspf=s")
        result = yield self.check(dkimResults=[dkim("pass", "mail.example.test")])
        self.assertEqual((result.result, result.dkimAligned), ("pass", True))
        result = yield self.check(
            "strict.test",
            spfResult=spf("pass", "bounces.strict.test"),
            dkimResults=[dkim("pass", "mail.strict.test")],
        )
        self.assertEqual((result.result, result.disposition), ("fail", "reject"))
        result = yield self.check("strict.test", dkimResults=[dkim("pass", "strict.test")])
        self.assertEqual(result.result, "pass")

    @defer.inlineCallbacks
    def test_subdomainPolicy(self) -> InlineCallbacks:
        """
        A subdomain without a record of its own gets the organizational
        domain's sp= (or p= without sp=).
        """
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject; sp=quarantine")
        self.dns.addTXT("_dmarc.nosp.test", "v=DMARC1; p=reject")
        result = yield self.check("news.example.test")
        self.assertEqual(
            (result.policy, result.disposition, result.recordDomain),
            ("quarantine", "quarantine", "example.test"),
        )
        result = yield self.check("example.test")
        self.assertEqual(result.policy, "reject")
        result = yield self.check("a.nosp.test")
        self.assertEqual(result.policy, "reject")

    @defer.inlineCallbacks
    def test_subdomainOwnRecord(self) -> InlineCallbacks:
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject")
        self.dns.addTXT("_dmarc.news.example.test", "v=DMARC1; p=none")
        result = yield self.check("news.example.test")
        self.assertEqual((result.policy, result.disposition), ("none", "none"))

    @defer.inlineCallbacks
    def test_trustedARC(self) -> InlineCallbacks:
        """
        A valid ARC chain sealed by a trusted forwarder is not rejected; an
        untrusted sealer or a broken chain does not help.
        """
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject")
        result = yield self.check(arc=ARCResult("pass", 1, "lists.test"))
        self.assertEqual(
            (result.result, result.disposition, result.override),
            ("fail", "none", "trusted_forwarder"),
        )
        result = yield self.check(arc=ARCResult("pass", 1, "other.test"))
        self.assertEqual(result.disposition, "reject")
        result = yield self.check(arc=ARCResult("fail", 1, "lists.test"))
        self.assertEqual(result.disposition, "reject")

    @defer.inlineCallbacks
    def test_temperrorLookup(self) -> InlineCallbacks:
        """
        A policy that cannot be fetched is a temperror: a tempfail for a
        message without an aligned pass, nothing for one with.
        """
        self.dns.failWithServFail("_dmarc.example.test")
        result = yield self.check()
        self.assertEqual((result.result, result.disposition), ("temperror", "tempfail"))
        result = yield self.check(dkimResults=[dkim("pass", "example.test")])
        self.assertEqual((result.result, result.disposition), ("temperror", "none"))

    @defer.inlineCallbacks
    def test_temperrorUnderlying(self) -> InlineCallbacks:
        """
        p=reject and a DKIM key that could not be fetched: tempfail, not
        reject.
        """
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=reject")
        result = yield self.check(dkimResults=[dkim("temperror", "example.test")])
        self.assertEqual((result.result, result.disposition), ("temperror", "tempfail"))

    @defer.inlineCallbacks
    def test_permerror(self) -> InlineCallbacks:
        self.dns.addTXT("_dmarc.example.test", "v=DMARC1; p=bounce")
        result = yield self.check()
        self.assertEqual((result.result, result.disposition), ("permerror", "none"))

    @defer.inlineCallbacks
    def test_severalFromDomains(self) -> InlineCallbacks:
        """
        With several From domains the strictest outcome counts: one cannot
        hide a failing domain behind one without a policy.
        """
        self.dns.addTXT("_dmarc.bank.test", "v=DMARC1; p=reject")
        result = yield self.checker.check(
            ["a@nopolicy.test, ceo@bank.test"], spf("pass", "nopolicy.test"), []
        )
        self.assertEqual((result.domain, result.disposition), ("bank.test", "reject"))
