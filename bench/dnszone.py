"""
A loopback authoritative DNS server for the relay benchmark (twisted.names).

Serves one C{.test} zone on UDP and TCP at C{--host} (127.0.0.1) port C{--port}: an MX for
C{--domain} pointing at C{--mx}, whose A record is C{--address}.  Every other
name in the zone answers NXDOMAIN, and names with records of another type an
empty NOERROR, both with the zone's SOA (RFC 2308: so resolvers may cache them,
as they cache a real zone's); names outside it answer NXDOMAIN without one.  Prints C{ready} once
listening; stops on SIGTERM.

Run with the benchmark's virtual environment (it needs Twisted)::

    python dnszone.py --port 5353 --domain relay.test --mx mx.relay.test --address 127.0.0.2
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import defer, reactor
from twisted.names import common, dns, error, server

__all__ = ["Zone", "ZoneServerFactory", "main"]


def _key(name: str | bytes) -> bytes:
    if isinstance(name, str):
        name = name.encode("ascii")
    return name.rstrip(b".").lower()


class Zone(common.ResolverBase):
    """
    An in-memory zone: C{records[(name, type)]} is a list of payloads.
    """

    def __init__(self, origin: str, records: dict[tuple[bytes, int], list]) -> None:
        common.ResolverBase.__init__(self)
        self.origin = _key(origin)
        self.records = records

    def contains(self, name: str | bytes) -> bool:
        """
        Whether C{name} is the zone's origin or a name under it.
        """
        key = _key(name)
        return key == self.origin or key.endswith(b"." + self.origin)

    def soa(self) -> dns.RRHeader:
        return dns.RRHeader(
            name=self.origin,
            type=dns.SOA,
            ttl=60,
            auth=True,
            payload=dns.Record_SOA(
                mname=b"ns." + self.origin,
                rname=b"hostmaster." + self.origin,
                serial=1,
                minimum=60,
                ttl=60,
            ),
        )

    def _lookup(self, name, cls, type, timeout=None):
        key = _key(name)
        if not self.contains(key):
            return defer.fail(error.DomainError(name))
        answers = [
            dns.RRHeader(name=key, type=type, cls=cls, ttl=60, payload=payload, auth=True)
            for payload in self.records.get((key, type), [])
        ]
        additional = []
        if type == dns.MX:
            for answer in answers:
                exchange = _key(answer.payload.name.name)
                for payload in self.records.get((exchange, dns.A), []):
                    additional.append(
                        dns.RRHeader(name=exchange, type=dns.A, ttl=60, payload=payload, auth=True)
                    )
        if answers or any(k[0] == key for k in self.records):
            # An empty answer carries the zone's SOA, as a real authoritative
            # server's does: its TTL and MINIMUM say how long resolvers may
            # cache "no such records" (RFC 2308, section 5).
            authority = [] if answers else [self.soa()]
            return defer.succeed((answers, authority, additional))
        return defer.fail(error.AuthoritativeDomainError(name))


class ZoneServerFactory(server.DNSServerFactory):
    """
    Serves one L{Zone}, and puts its SOA in the authority section of an
    NXDOMAIN for a name in it, as RFC 2308 (section 3) requires of an
    authoritative server: without it a resolver must not cache the answer
    (RFC 2308, section 5), and asks again at every lookup.
    """

    def __init__(self, zone: Zone) -> None:
        server.DNSServerFactory.__init__(self, authorities=[zone])
        self.zone = zone

    def sendReply(self, protocol, message, address):
        if (
            message.rCode == dns.ENAME
            and not message.authority
            and message.queries
            and self.zone.contains(message.queries[0].name.name)
        ):
            message.authority = [self.zone.soa()]
            message.auth = True
        server.DNSServerFactory.sendReply(self, protocol, message, address)


def main(argv=None) -> int:
    """
    Serve the zone until SIGTERM.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--domain", default="relay.test")
    parser.add_argument("--mx", default="mx.relay.test")
    parser.add_argument("--address", default="127.0.0.2")
    args = parser.parse_args(argv)
    if not args.domain.endswith(".test"):
        parser.error("only .test domains are served")
    if not args.host.startswith("127."):
        parser.error("only loopback addresses are served")
    mx, domain = _key(args.mx), _key(args.domain)
    records = {
        (domain, dns.MX): [dns.Record_MX(10, mx, ttl=60)],
        (mx, dns.A): [dns.Record_A(args.address, ttl=60)],
    }
    zone = Zone(domain.decode(), records)
    factory = ZoneServerFactory(zone)
    protocol = dns.DNSDatagramProtocol(factory)
    reactor.listenUDP(args.port, protocol, interface=args.host)
    reactor.listenTCP(args.port, factory, interface=args.host)
    reactor.callWhenRunning(lambda: print("ready", flush=True))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
