"""
Tests for L{gopherpost.inbound.access}: the allow-list portal.
"""

from __future__ import annotations

import ipaddress

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost.inbound.access import (
    AllowListChecker,
    ClientRealm,
    IClientIdentity,
    PeerAddress,
    makePortal,
)
from gopherpost.interfaces import IPeerAddress


def networks(*texts):
    return [ipaddress.ip_network(t) for t in texts]


class FakeResolver:
    """
    Answers L{forwardConfirmedNames} from a table (the real one is tested
    against a loopback DNS server in tests.test_dns).
    """

    def __init__(self, table):
        self.table = table
        self.asked = []

    def forwardConfirmedNames(self, address):
        self.asked.append(address)
        answer = self.table.get(address)
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer or set())


class CheckerTests(SynchronousTestCase):
    """
    Addresses, networks and forward-confirmed names.
    """

    def check(self, checker, host):
        return checker.requestAvatarId(PeerAddress(host))

    def test_interfaces(self) -> None:
        """
        The checker and the credentials provide their interfaces.
        """
        checker = AllowListChecker([], [])
        self.assertTrue(verifyObject(ICredentialsChecker, checker))
        self.assertTrue(verifyObject(IPeerAddress, PeerAddress("192.0.2.1", 25)))

    def test_networks(self) -> None:
        """
        CIDRs and bare addresses, IPv4 and IPv6.
        """
        checker = AllowListChecker(networks("192.0.2.0/24", "2001:db8::/32", "203.0.113.5/32"), [])
        for allowed in ("192.0.2.200", "2001:db8::1", "203.0.113.5", "::ffff:192.0.2.9"):
            self.assertEqual(
                self.successResultOf(self.check(checker, allowed)),
                str(PeerAddress(allowed).host).encode(),
            )
        for refused in ("198.51.100.1", "2001:db9::1", "203.0.113.6"):
            self.failureResultOf(self.check(checker, refused), UnauthorizedLogin)

    def test_mappedNetwork(self) -> None:
        """
        An allow-list entry written as IPv4-mapped IPv6 admits IPv4 clients.
        """
        checker = AllowListChecker(networks("::ffff:192.0.2.0/120"), [])
        self.successResultOf(self.check(checker, "192.0.2.7"))
        self.failureResultOf(self.check(checker, "192.0.3.7"), UnauthorizedLogin)

    def test_emptyRejectsAll(self) -> None:
        """
        With nothing allowed, nobody is.
        """
        self.failureResultOf(self.check(AllowListChecker([], []), "127.0.0.1"), UnauthorizedLogin)

    def test_hostLiteral(self) -> None:
        """
        An IP literal in SMTP_ALLOW_HOSTS matches that address, no DNS.
        """
        resolver = FakeResolver({})
        checker = AllowListChecker([], ["192.0.2.1", "relay.example.test"], resolver)
        self.successResultOf(self.check(checker, "192.0.2.1"))
        self.assertEqual(resolver.asked, [])

    def test_forwardConfirmedName(self) -> None:
        """
        A name matches when it is among the client's forward-confirmed
        names (any case, trailing dot ignored); otherwise the client is
        refused, also when DNS fails.
        """
        resolver = FakeResolver(
            {
                "192.0.2.1": {"Relay.Example.Test."},
                "192.0.2.2": {"other.example.test"},
                "192.0.2.3": RuntimeError("SERVFAIL"),
            }
        )
        checker = AllowListChecker([], ["relay.example.test"], resolver)
        self.assertEqual(self.successResultOf(self.check(checker, "192.0.2.1")), b"192.0.2.1")
        self.failureResultOf(self.check(checker, "192.0.2.2"), UnauthorizedLogin)
        self.failureResultOf(self.check(checker, "192.0.2.3"), UnauthorizedLogin)


class PortalTests(SynchronousTestCase):
    """
    The portal admits clients by address and names them.
    """

    def test_login(self) -> None:
        """
        Logging in with the peer address yields an L{IClientIdentity} named
        by the address; an address outside the list is refused.
        """
        portal = makePortal(networks("127.0.0.0/8"), [])
        interface, avatar, logout = self.successResultOf(
            portal.login(PeerAddress("127.0.0.1"), None, IClientIdentity)
        )
        self.assertIs(interface, IClientIdentity)
        self.assertTrue(verifyObject(IClientIdentity, avatar))
        self.assertEqual(avatar.name, "127.0.0.1")  # type: ignore[attr-defined]
        logout()
        self.failureResultOf(
            portal.login(PeerAddress("192.0.2.1"), None, IClientIdentity), UnauthorizedLogin
        )

    def test_otherInterface(self) -> None:
        """
        The realm has nothing but L{IClientIdentity} avatars.
        """
        realm = ClientRealm()
        self.assertTrue(verifyObject(IRealm, realm))
        self.assertRaises(NotImplementedError, realm.requestAvatar, b"x", None, IPeerAddress)
