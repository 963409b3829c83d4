"""
Tests for L{gopherpost.listeners.endpoints}: endpoint strings to
L{ListenerSpec}s, without the network.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.listeners.endpoints import (
    LISTEN_BACKLOG,
    EndpointError,
    ListenerSpec,
    defaultListener,
    everyAddress,
    parseEndpoint,
    parseListeners,
)


def spec(text: str) -> ListenerSpec:
    return parseEndpoint("SMTP_LISTEN", text)


class TCPTests(SynchronousTestCase):
    """
    C{tcp:} and C{tcp6:}.
    """

    def test_tcp(self) -> None:
        """
        C{tcp:PORT} is every IPv4 address, Twisted's default; the backlog
        is ours unless given.
        """
        parsed = spec("tcp:25")
        self.assertEqual(
            (parsed.kind, parsed.port, parsed.interface, parsed.backlog, parsed.proxy),
            ("tcp", 25, "0.0.0.0", LISTEN_BACKLOG, False),
        )
        self.assertEqual(parsed.description, "tcp:25")
        self.assertEqual(parsed.address, "0.0.0.0:25")

    def test_tcp6(self) -> None:
        """
        C{tcp6:PORT} is C{::}.
        """
        parsed = spec("tcp6:587")
        self.assertEqual((parsed.port, parsed.interface, parsed.ipv6), (587, "::", True))
        self.assertEqual(parsed.address, "[::]:587")

    def test_options(self) -> None:
        """
        C{interface=} and C{backlog=}, and C{port=} as a keyword.
        """
        parsed = spec("tcp:port=2525:interface=127.0.0.1:backlog=10")
        self.assertEqual((parsed.port, parsed.interface, parsed.backlog), (2525, "127.0.0.1", 10))

    def test_ipv6Interface(self) -> None:
        """
        An IPv6 interface is written with escaped colons, as in Twisted, or
        in brackets; C{tcp:} takes one too (Twisted binds IPv6 then).
        """
        for text in (
            "tcp6:25:interface=\\:\\:1",
            "tcp6:25:interface=[::1]",
            "tcp:25:interface=[0:0::1]",
        ):
            parsed = spec(text)
            self.assertEqual(parsed.interface, "::1", text)
            self.assertTrue(parsed.ipv6)

    def test_haproxy(self) -> None:
        """
        C{haproxy:} wraps a tcp endpoint.
        """
        parsed = spec("haproxy:tcp6:25:interface=[2001:db8::1]")
        self.assertTrue(parsed.proxy)
        self.assertEqual((parsed.kind, parsed.interface), ("tcp", "2001:db8::1"))
        self.assertEqual(parsed.description, "haproxy:tcp6:25:interface=[2001:db8::1]")

    def test_caseOfKinds(self) -> None:
        """
        Kind names and option names are case-insensitive.
        """
        self.assertEqual(spec("TCP:25:Interface=127.0.0.1").interface, "127.0.0.1")
        self.assertTrue(spec("HAProxy:tcp:25").proxy)

    def assertInvalid(self, text: str, *fragments: str) -> None:
        error = self.assertRaises(EndpointError, spec, text)
        message = str(error)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_invalid(self) -> None:
        """
        Each mistake gets a message saying what is wrong.
        """
        self.assertInvalid("tcp", "needs a port")
        self.assertInvalid("tcp:", "needs a port")
        self.assertInvalid("tcp:smtp", "port 'smtp'")
        self.assertInvalid("tcp:65536", "0 to 65535")
        self.assertInvalid("tcp:-1", "port")
        self.assertInvalid("tcp:25:interface=mx.example.test", "not an IP address")
        self.assertInvalid("tcp6:25:interface=127.0.0.1", "tcp6: needs an IPv6 interface")
        self.assertInvalid("tcp:25:interface=::1", "interface=[::1]")
        self.assertInvalid("tcp:25:127.0.0.1", "interface=")
        self.assertInvalid("tcp:25:backlog=0", "backlog")
        self.assertInvalid("tcp:25:reuse=yes", "no option 'reuse'")
        self.assertInvalid("tcp:25:port=26", "twice")
        self.assertInvalid("tcp:25:interface=[::1", "without ']'")
        self.assertInvalid("tcp:25\\", "backslash")
        self.assertInvalid("unix:/run/gopherpost.sock", "'unix:' is not supported")
        self.assertInvalid("ssl:465", "'ssl:' is not supported")
        self.assertInvalid("25", "'25:' is not supported")
        self.assertInvalid("port=25", "endpoint kind")
        self.assertInvalid("haproxy:", "must wrap")
        self.assertInvalid("haproxy:haproxy:tcp:25", "twice")


class SystemdTests(SynchronousTestCase):
    """
    C{systemd:}.
    """

    def test_index(self) -> None:
        """
        C{systemd:domain=INET6:index=N}, the form both Twisted releases know.
        """
        parsed = spec("systemd:domain=INET6:index=1")
        self.assertEqual(
            (parsed.kind, parsed.domain, parsed.index, parsed.name), ("systemd", "INET6", 1, None)
        )
        self.assertEqual(parsed.address, "the inherited socket (index 1)")

    def test_name(self) -> None:
        """
        C{name=} picks a socket by its C{FileDescriptorName=}; the domain is
        optional (then the socket's own) and may be positional, as in
        Twisted.
        """
        parsed = spec("haproxy:systemd:name=smtp")
        self.assertEqual((parsed.name, parsed.domain, parsed.proxy), ("smtp", None, True))
        self.assertEqual(spec("systemd:inet:index=0").domain, "INET")

    def test_invalid(self) -> None:
        """
        Exactly one of C{index=} and C{name=}; only IP domains.
        """
        for text, fragment in (
            ("systemd:domain=INET6", "exactly one of index=N"),
            ("systemd:index=0:name=smtp", "exactly one"),
            ("systemd:domain=UNIX:index=0", "not INET or INET6"),
            ("systemd:index=first", "index 'first'"),
            ("systemd:INET:domain=INET:index=0", "takes domain="),
            ("systemd:index=0:port=25", "no option 'port'"),
        ):
            error = self.assertRaises(EndpointError, spec, text)
            self.assertIn(fragment, str(error), text)


class ListTests(SynchronousTestCase):
    """
    L{parseListeners} and the default listener.
    """

    def test_list(self) -> None:
        """
        Comma-separated, blanks ignored; each spec remembers its variable.
        """
        specs = parseListeners("SMTP_SUBMISSION_LISTEN", " tcp:587 , ,haproxy:tcp:10587")
        self.assertEqual([s.description for s in specs], ["tcp:587", "haproxy:tcp:10587"])
        self.assertEqual({s.variable for s in specs}, {"SMTP_SUBMISSION_LISTEN"})
        self.assertEqual(parseListeners("SMTP_LISTEN", " , "), ())

    def test_listNamesTheItem(self) -> None:
        """
        An error names the item that does not parse.
        """
        error = self.assertRaises(EndpointError, parseListeners, "SMTP_LISTEN", "tcp:25,tcp:x")
        self.assertTrue(str(error).startswith("'tcp:x': "), str(error))

    def test_default(self) -> None:
        """
        Without C{SMTP_LISTEN}: C{SMTP_LISTEN_ADDR} (else every address) and
        C{SMTP_PORT}, errors naming C{SMTP_PORT}.
        """
        default = defaultListener("127.0.0.1", 2525)
        self.assertEqual(
            (default.variable, default.kind, default.interface, default.port),
            ("SMTP_PORT", "tcp", "127.0.0.1", 2525),
        )
        self.assertEqual(parseEndpoint("SMTP_PORT", default.description), default)
        anywhere = defaultListener("", 25)
        self.assertEqual(anywhere.interface, everyAddress())
        self.assertEqual(parseEndpoint("SMTP_PORT", anywhere.description), anywhere)
        self.assertEqual(defaultListener("::1", 25).description, "tcp6:25:interface=\\:\\:1")
