# -*- test-case-name: tests.test_dns -*-
"""
Non-blocking DNS for GopherPost: dnspython in a thread pool, Deferreds out.

Every DNS query the server makes goes through a L{Resolver}: to the servers
of C{SMTP_DNS_SERVERS} when set, else to those of C{/etc/resolv.conf}.
dnspython is synchronous, so each query runs in a thread pool (by default the
reactor's) via L{deferToThreadPool}; the reactor thread never waits.

Answers are cached as a caching resolver would (RFC 1035, RFC 2308): records
for their TTL (at most L{MAX_CACHE_TTL} seconds), "no such name" and "no
records of this type" for the SOA's negative TTL (at most
L{MAX_NEGATIVE_CACHE_TTL}); temporary failures never.  Identical lookups in
flight at the same time share one query.  A relay delivering a burst of mail
to one domain thus asks for its MX and addresses once, not once per
connection.

Failures are L{DNSError}s, split into L{PermanentDNSError} (the name does
not exist: retrying will not help) and L{TemporaryDNSError} (SERVFAIL,
timeouts, no reachable nameserver: try again later).  A name that exists
but has no records of the asked type is not an error: the lookup returns an
empty list.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import dns.exception
import dns.flags
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename
from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

if TYPE_CHECKING:
    from gopherpost.config import Settings

try:
    import dns.nameserver as _dnsNameserver  # dnspython >= 2.4
except ImportError:  # pragma: no cover - depends on the installed dnspython
    _dnsNameserver = None  # type: ignore[assignment]

__all__ = [
    "DNS_THREADS",
    "DNSError",
    "PermanentDNSError",
    "TemporaryDNSError",
    "IDNSResolver",
    "AuthenticatedAnswer",
    "Resolver",
    "resolverFromSettings",
    "DEFAULT_TIMEOUT",
    "DEFAULT_FCRDNS_TIMEOUT",
    "MAX_PTR_NAMES",
    "MAX_CACHE_TTL",
    "MAX_NEGATIVE_CACHE_TTL",
    "MAX_CACHE_ENTRIES",
]

#: Threads for DNS lookups, kept apart from the reactor's pool (each lookup
#: may block its thread for the lookup's timeout).
DNS_THREADS = 10

#: Seconds one lookup may take in total, all servers and retries included.
DEFAULT_TIMEOUT = 10.0

#: Seconds L{Resolver.forwardConfirmedNames} may take in total.
DEFAULT_FCRDNS_TIMEOUT = 5.0

#: At most this many PTR names of one address are checked forward.
MAX_PTR_NAMES = 10

#: Seconds an answer is cached at most, whatever its TTL.
MAX_CACHE_TTL = 3600.0

#: Seconds "no such name" or "no records" is cached at most (RFC 2308).
MAX_NEGATIVE_CACHE_TTL = 600.0

#: Cached answers kept at most; the least recently used go first.
MAX_CACHE_ENTRIES = 10000

# dnspython's per-server wait for one UDP answer.
_PER_SERVER_TIMEOUT = 2.0

_T = TypeVar("_T")
ServerSpec = str | tuple[str, int]


class DNSError(Exception):
    """
    A DNS lookup failed.

    @ivar name: the name that was looked up (for PTR lookups, the address).
    @ivar reason: what went wrong, one line.
    @ivar status: the RFC 3463 enhanced status code that fits a delivery
        failing because of this.
    @ivar cacheSeconds: how long the answer may be cached (0: not at all).
    """

    status = "4.4.3"
    cacheSeconds = 0.0

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)
        self.name = name
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


class PermanentDNSError(DNSError):
    """
    The answer is final: the name does not exist (NXDOMAIN), is not a valid
    domain name, or (in L{gopherpost.relay.mx}) accepts no mail.
    """

    status = "5.1.2"


class TemporaryDNSError(DNSError):
    """
    No answer now: SERVFAIL, a timeout, or no nameserver reachable.
    """

    status = "4.4.3"


class IDNSResolver(Interface):
    """
    Asynchronous DNS lookups.  Every method returns a L{defer.Deferred}
    that fails with L{PermanentDNSError} or L{TemporaryDNSError}.
    """

    def lookupMX(name: str) -> defer.Deferred:
        """
        The MX records of C{name}.

        @return: a L{defer.Deferred} firing with a list of C{(preference,
            exchange)}; C{exchange} is lower case without the trailing dot,
            and C{"."} for the root (a null MX).  Empty when the name exists
            but has no MX records.
        """

    def lookupAddresses(name: str) -> defer.Deferred:
        """
        The A and AAAA records of C{name}.

        @return: a L{defer.Deferred} firing with a list of IP addresses as
            text, IPv4 first; empty when the name exists without addresses.
        """

    def lookupPTR(address: str) -> defer.Deferred:
        """
        The PTR records of an IPv4 or IPv6 address.

        @return: a L{defer.Deferred} firing with a list of names, lower case
            without the trailing dot.
        """

    def lookupTXT(name: str) -> defer.Deferred:
        """
        The TXT records of C{name}.

        @return: a L{defer.Deferred} firing with a list of L{bytes}, one per
            record: the record's strings joined.
        """

    def forwardConfirmedNames(address: str, timeout: float | None = None) -> defer.Deferred:
        """
        Forward-confirmed reverse DNS of C{address}.

        @return: a L{defer.Deferred} firing with the L{set} of names that
            C{address} has a PTR record for and that resolve back to it.
        """


class AuthenticatedAnswer(NamedTuple):
    """
    The answer to a lookup that reads the resolver's DNSSEC verdict (see
    L{Resolver.lookupAuthenticated}).

    @ivar records: the dnspython rdatas; empty for NODATA and NXDOMAIN.
    @ivar authenticated: whether the resolver set the AD bit: it validated
        the answer (or the denial) with DNSSEC.  Only meaningful when the
        resolver is trusted: a validating resolver on the same host.
    @ivar exists: C{False} for NXDOMAIN.
    """

    records: list[Any]
    authenticated: bool
    exists: bool = True


def _canonicalAddress(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """
    Parse an IP address; an IPv4-mapped IPv6 address becomes IPv4.

    @raise ValueError: if C{address} is not an IP address.
    """
    parsed = ipaddress.ip_address(address.strip().strip("[]"))
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def _nameText(name: dns.name.Name) -> str:
    """
    A name as GopherPost writes it: lower case, no trailing dot, C{"."} for
    the root.
    """
    if name == dns.name.root:
        return "."
    return name.to_text(omit_final_dot=True).lower()


def _normalizeServers(servers: Sequence[ServerSpec]) -> list[tuple[str, int]]:
    normalized = []
    for server in servers:
        host, port = (server, 53) if isinstance(server, str) else server
        normalized.append((str(ipaddress.ip_address(host.strip("[]"))), int(port)))
    return normalized


def _buildResolvers(servers: list[tuple[str, int]], timeout: float) -> list[dns.resolver.Resolver]:
    """
    The dnspython resolvers that together ask exactly C{servers}, in order.

    dnspython >= 2.4 takes one L{dns.nameserver.Do53Nameserver} per server,
    each with its own port.  dnspython 2.3 only has C{nameserver_ports},
    keyed by address, so the same address with two ports needs two
    resolvers: the servers are split into groups without a repeated address,
    tried one group after the other.
    """

    def fresh() -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.timeout = min(_PER_SERVER_TIMEOUT, timeout)
        resolver.lifetime = timeout
        return resolver

    if not servers:
        try:
            system = dns.resolver.Resolver(configure=True)
        except dns.exception.DNSException:
            # No /etc/resolv.conf or no nameserver in it: every lookup then
            # fails temporarily, which is what an operator would want.
            return []
        system.timeout = min(_PER_SERVER_TIMEOUT, timeout)
        system.lifetime = timeout
        return [system]
    if _dnsNameserver is not None:
        resolver = fresh()
        resolver.nameservers = [_dnsNameserver.Do53Nameserver(host, port) for host, port in servers]
        return [resolver]
    groups: list[list[tuple[str, int]]] = []
    for host, port in servers:
        for group in groups:
            if all(h != host for h, _ in group):
                group.append((host, port))
                break
        else:
            groups.append([(host, port)])
    resolvers = []
    for group in groups:
        resolver = fresh()
        resolver.nameservers = [host for host, _ in group]
        resolver.nameserver_ports = dict(group)
        resolvers.append(resolver)
    return resolvers


def _mapException(name: str, e: Exception, lifetime: float) -> DNSError:
    if isinstance(e, dns.resolver.NXDOMAIN):
        return PermanentDNSError(name, "no such domain (NXDOMAIN)")
    if isinstance(e, dns.resolver.YXDOMAIN):
        return PermanentDNSError(name, "name too long after DNAME substitution")
    if isinstance(e, dns.exception.Timeout):
        return TemporaryDNSError(name, f"DNS timeout after {lifetime:g} s")
    if isinstance(e, dns.resolver.NoNameservers):
        detail = str(e)
        if len(detail) > 300:
            detail = detail[:297] + "..."
        return TemporaryDNSError(name, f"no nameserver answered: {detail}")
    return TemporaryDNSError(name, f"DNS failure: {type(e).__name__}: {e}")


def _negativeTTL(response: object) -> float:
    """
    How long a negative answer may be cached (RFC 2308, section 5): the
    lesser of the SOA record's TTL and its MINIMUM field; 0 without a SOA.
    """
    for rrset in getattr(response, "authority", None) or ():
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, rrset[0].minimum))
    return 0.0


@implementer(IDNSResolver)
class Resolver:
    """
    DNS lookups through dnspython, run in a thread pool.

    @ivar servers: the C{(address, port)} of every nameserver asked, in
        order; empty when the system's configuration is used.
    @ivar timeout: seconds one lookup may take, all servers included.
    @ivar fcrdnsTimeout: seconds L{forwardConfirmedNames} may take.
    """

    def __init__(
        self,
        servers: Sequence[ServerSpec],
        reactor: IReactorTime,
        threadpool: ThreadPool | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        fcrdnsTimeout: float = DEFAULT_FCRDNS_TIMEOUT,
    ) -> None:
        """
        @param servers: C{(address, port)} pairs (a bare address means port
            53), e.g. L{gopherpost.config.Settings.dnsServers}; empty means
            the nameservers of C{/etc/resolv.conf}.
        @param reactor: provides C{IReactorThreads} and C{IReactorTime}.
        @param threadpool: the L{twisted.python.threadpool.ThreadPool} that
            runs the blocking queries (default: the reactor's).
        @param timeout: see L{Resolver.timeout}.
        @param fcrdnsTimeout: see L{Resolver.fcrdnsTimeout}.
        """
        self.servers = tuple(_normalizeServers(servers))
        self.timeout = timeout
        self.fcrdnsTimeout = fcrdnsTimeout
        self._reactor = reactor
        self._threadpool = threadpool
        self._resolvers = _buildResolvers(list(self.servers), timeout)
        #: (name, type) -> (expiry on the reactor's clock, rdatas or error)
        self._cache: OrderedDict[
            tuple[dns.name.Name, dns.rdatatype.RdataType], tuple[float, tuple[Any, ...] | DNSError]
        ] = OrderedDict()
        self._inFlight: dict = {}
        # lookupAuthenticated's own resolvers, cache and lookups in flight.
        self._authenticatingResolvers = _buildResolvers(list(self.servers), timeout)
        for resolver in self._authenticatingResolvers:
            resolver.use_edns(0, dns.flags.DO, 1232)
            resolver.flags = dns.flags.RD | dns.flags.AD
        self._authenticatedCache: OrderedDict[
            tuple[dns.name.Name, dns.rdatatype.RdataType], tuple[float, AuthenticatedAnswer]
        ] = OrderedDict()
        self._authenticatedInFlight: dict[Any, list[defer.Deferred[AuthenticatedAnswer]]] = {}

    # Plumbing

    def _inThread(self, f: Callable[..., _T], *args: object) -> defer.Deferred:
        # The reactor also provides IReactorThreads (see __init__).
        threads = cast(IReactorThreads, self._reactor)
        pool = self._threadpool
        if pool is None:
            pool = threads.getThreadPool()
        return deferToThreadPool(threads, pool, f, *args)

    def _resolve(
        self, name: str, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, lifetime: float
    ) -> tuple[list, float]:
        """
        Blocking: ask every resolver in turn until one gives a final answer.

        @return: the rdatas (empty for NODATA) and the seconds the answer
            may be cached.
        @raise DNSError: on failure; a L{PermanentDNSError} carries the
            seconds it may be cached as C{cacheSeconds}.
        """
        if not self._resolvers:
            raise TemporaryDNSError(name, "no nameservers configured")
        deadline = time.monotonic() + lifetime
        lastError: Exception | None = None
        for resolver in self._resolvers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                answer = resolver.resolve(qname, rdtype, search=False, lifetime=remaining)
            except dns.resolver.NoAnswer as e:
                return [], _negativeTTL(e.kwargs.get("response"))
            except (dns.resolver.NoNameservers, dns.exception.Timeout) as e:
                lastError = e
                continue
            except dns.exception.DNSException as e:
                error = _mapException(name, e, lifetime)
                if isinstance(e, dns.resolver.NXDOMAIN):
                    responses = e.kwargs.get("responses") or {}
                    error.cacheSeconds = min(
                        (_negativeTTL(r) for r in responses.values()), default=0.0
                    )
                raise error from None
            except OSError as e:
                raise TemporaryDNSError(name, f"DNS failure: {e}") from None
            return list(answer), max(0.0, answer.expiration - time.time())
        if lastError is None:
            lastError = dns.exception.Timeout()
        raise _mapException(name, lastError, lifetime) from None

    def _query(
        self, name: str, rdtype: dns.rdatatype.RdataType, lifetime: float | None = None
    ) -> defer.Deferred:
        """
        The rdatas of C{name}'s records of C{rdtype}: from the cache, from a
        lookup of the same already in flight, or from a new lookup.
        """
        if lifetime is None:
            lifetime = self.timeout
        try:
            qname = dns.name.from_text(name.strip())
        except (dns.exception.DNSException, UnicodeError, ValueError) as e:
            return defer.fail(PermanentDNSError(name, f"not a valid domain name ({e})"))
        key = (qname.canonicalize(), rdtype)
        now = self._reactor.seconds()
        cached = self._cache.get(key)
        if cached is not None:
            expires, outcome = cached
            if expires > now:
                self._cache.move_to_end(key)
                if isinstance(outcome, DNSError):
                    return defer.fail(outcome)
                return defer.succeed(list(outcome))
            del self._cache[key]
        waiting: defer.Deferred = defer.Deferred()
        if key in self._inFlight:
            self._inFlight[key].append(waiting)
            return waiting
        self._inFlight[key] = [waiting]

        def answered(result: tuple[list, float]) -> None:
            rdatas, ttl = result
            self._remember(key, min(ttl, MAX_CACHE_TTL), tuple(rdatas))
            for d in self._inFlight.pop(key, []):
                d.callback(list(rdatas))

        def failed(failure: Failure) -> None:
            error = failure.value
            if isinstance(error, PermanentDNSError):
                seconds = getattr(error, "cacheSeconds", 0.0)
                self._remember(key, min(seconds, MAX_NEGATIVE_CACHE_TTL), error)
            for d in self._inFlight.pop(key, []):
                d.errback(failure)

        self._inThread(self._resolve, name, qname, rdtype, lifetime).addCallbacks(answered, failed)
        return waiting

    def _remember(
        self,
        key: tuple[dns.name.Name, dns.rdatatype.RdataType],
        seconds: float,
        outcome: tuple[Any, ...] | DNSError,
    ) -> None:
        if seconds <= 0:
            return
        self._cache[key] = (self._reactor.seconds() + seconds, outcome)
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_CACHE_ENTRIES:
            self._cache.popitem(last=False)

    # IDNSResolver

    def lookupMX(self, name: str) -> defer.Deferred:
        """
        See L{IDNSResolver.lookupMX}.
        """
        return self._query(name, dns.rdatatype.MX).addCallback(
            lambda rdatas: [(r.preference, _nameText(r.exchange)) for r in rdatas]
        )

    def lookupAddresses(self, name: str, lifetime: float | None = None) -> defer.Deferred:
        """
        See L{IDNSResolver.lookupAddresses}.

        A and AAAA are asked at once.  When one of them answers with
        addresses, those are the result even if the other failed; otherwise
        a temporary failure of either wins over NXDOMAIN.

        @param lifetime: seconds the lookup may take (default L{timeout}).
        """
        queries = [
            self._query(name, rdtype, lifetime) for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        ]

        def combine(results: list[tuple[bool, object]]) -> list[str]:
            addresses: list[str] = []
            errors: list[DNSError] = []
            for ok, value in results:
                if ok:
                    rdatas: list = value  # type: ignore[assignment]
                    addresses.extend(str(_canonicalAddress(r.address)) for r in rdatas)
                else:
                    failure: Failure = value  # type: ignore[assignment]
                    failure.trap(DNSError)
                    if isinstance(failure.value, DNSError):
                        errors.append(failure.value)
            if addresses or not errors:
                return addresses
            for error in errors:
                if isinstance(error, TemporaryDNSError):
                    raise error
            raise errors[0]

        return defer.DeferredList(queries, consumeErrors=True).addCallback(combine)

    def lookupPTR(self, address: str, lifetime: float | None = None) -> defer.Deferred:
        """
        See L{IDNSResolver.lookupPTR}.

        @param lifetime: seconds the lookup may take (default L{timeout}).
        @raise PermanentDNSError: (in the L{defer.Deferred}) when C{address}
            is not an IP address.
        """
        try:
            ip = _canonicalAddress(address)
        except ValueError:
            return defer.fail(PermanentDNSError(address, "not an IP address"))
        reverse = dns.reversename.from_address(str(ip)).to_text()
        return self._query(reverse, dns.rdatatype.PTR, lifetime).addCallback(
            lambda rdatas: [_nameText(r.target) for r in rdatas]
        )

    def lookupTXT(self, name: str) -> defer.Deferred:
        """
        See L{IDNSResolver.lookupTXT}.
        """
        return self._query(name, dns.rdatatype.TXT).addCallback(
            lambda rdatas: [b"".join(r.strings) for r in rdatas]
        )

    def lookupRecords(
        self, name: str, rdtype: str, lifetime: float | None = None
    ) -> defer.Deferred:
        """
        The records of any one type, as dnspython rdata objects, through the
        same cache and nameservers as the other lookups: for checks that need
        types or shapes the other methods do not give (the A records alone
        of a DNSBL name; SPF's and DKIM's lookups, see
        L{gopherpost.checks.threaddns}).

        @param rdtype: a type's mnemonic, e.g. C{"A"}, C{"TXT"}, C{"PTR"}.
        @param lifetime: seconds the lookup may take (default L{timeout}).
        @return: a L{defer.Deferred} firing with a list of
            C{dns.rdata.Rdata}; empty when the name has no such records.
        """
        try:
            rdtypeValue = dns.rdatatype.from_text(rdtype)
        except dns.exception.DNSException:
            return defer.fail(PermanentDNSError(name, f"unknown record type {rdtype!r}"))
        return self._query(name, rdtypeValue, lifetime)

    def forwardConfirmedNames(self, address: str, timeout: float | None = None) -> defer.Deferred:
        """
        Forward-confirmed reverse DNS (FCrDNS, "iprev" of RFC 8601): the
        PTR names of C{address} whose A/AAAA records include C{address}.

        This is how a host name in C{SMTP_ALLOW_HOSTS} is matched against a
        client.  At most L{MAX_PTR_NAMES} names are checked; the whole check
        takes at most C{timeout} seconds.

        @param address: the client's IP address (IPv4-mapped IPv6 is
            treated as IPv4).
        @param timeout: seconds in total (default L{fcrdnsTimeout}).
        @return: a L{defer.Deferred} firing with a L{set} of names (lower
            case, no trailing dot); empty when there is no PTR record or no
            name resolves back.  It fails with L{TemporaryDNSError} when the
            PTR lookup fails temporarily, when no name is confirmed and a
            forward lookup failed temporarily, or on timeout; with
            L{PermanentDNSError} when C{address} is not an IP address.
        """
        if timeout is None:
            timeout = self.fcrdnsTimeout
        try:
            ip = _canonicalAddress(address)
        except ValueError:
            return defer.fail(PermanentDNSError(address, "not an IP address"))
        clock = self._reactor
        deadline = clock.seconds() + timeout

        def noNames(failure: Failure) -> list[str]:
            failure.trap(PermanentDNSError)
            return []

        def checkForward(names: list[str]) -> defer.Deferred:
            names = [n for n in dict.fromkeys(names) if n != "."][:MAX_PTR_NAMES]
            remaining = max(deadline - clock.seconds(), 0.001)
            lookups = [self.lookupAddresses(n, remaining) for n in names]
            return defer.DeferredList(lookups, consumeErrors=True).addCallback(confirm, names)

        def confirm(results: list[tuple[bool, object]], names: list[str]) -> set[str]:
            confirmed: set[str] = set()
            temporary: DNSError | None = None
            for name, (ok, value) in zip(names, results):
                if ok:
                    found: list[str] = value  # type: ignore[assignment]
                    if any(_canonicalAddress(a) == ip for a in found):
                        confirmed.add(name)
                else:
                    failure: Failure = value  # type: ignore[assignment]
                    failure.trap(DNSError)
                    if isinstance(failure.value, TemporaryDNSError):
                        temporary = failure.value
            if not confirmed and temporary is not None:
                raise temporary
            return confirmed

        def timedOut(result: object, timeout: float) -> None:
            raise TemporaryDNSError(str(ip), f"FCrDNS check timed out after {timeout:g} s")

        d = self.lookupPTR(str(ip), timeout)
        d.addErrback(noNames)
        d.addCallback(checkForward)
        d.addTimeout(timeout, clock, onTimeoutCancel=timedOut)
        return d

    # DNSSEC (issue 19: DANE).  Kept apart from the lookups above: other
    # query flags (DO, AD), hence other dnspython resolvers and another cache.

    def lookupAuthenticated(
        self, name: str, rdtype: str, lifetime: float | None = None
    ) -> defer.Deferred[AuthenticatedAnswer]:
        """
        The records of one type with the resolver's DNSSEC verdict: the
        query sets the DO and AD bits (RFC 3225, RFC 6840 section 5.7) and
        the answer's AD bit is read, as Postfix does with
        C{smtp_dns_support_level = dnssec}.  The resolver (C{SMTP_DNS_SERVERS},
        else the system's) is trusted to validate: run one on the same host.

        Answers are cached like the other lookups' (for their TTL, negative
        answers for the SOA's), apart from them.

        @param rdtype: a type's mnemonic, e.g. C{"MX"}, C{"TLSA"}.
        @param lifetime: seconds the lookup may take (default L{timeout}).
        @return: a L{defer.Deferred} firing with an L{AuthenticatedAnswer}
            (NODATA and NXDOMAIN included), or failing with
            L{TemporaryDNSError} (SERVFAIL, which a validating resolver also
            answers for bogus data; a timeout) or L{PermanentDNSError} (not a
            valid name).
        """
        try:
            rdtypeValue = dns.rdatatype.from_text(rdtype)
            qname = dns.name.from_text(name.strip())
        except (dns.exception.DNSException, UnicodeError, ValueError) as e:
            return defer.fail(PermanentDNSError(name, f"not a valid query ({e})"))
        if lifetime is None:
            lifetime = self.timeout
        key = (qname.canonicalize(), rdtypeValue)
        cache = self._authenticatedCache
        now = self._reactor.seconds()
        cached = cache.get(key)
        if cached is not None:
            expires, answer = cached
            if expires > now:
                cache.move_to_end(key)
                return defer.succeed(answer)
            del cache[key]
        waiting: defer.Deferred[AuthenticatedAnswer] = defer.Deferred()
        inFlight = self._authenticatedInFlight
        if key in inFlight:
            inFlight[key].append(waiting)
            return waiting
        inFlight[key] = [waiting]

        def answered(result: tuple[AuthenticatedAnswer, float]) -> None:
            answer, ttl = result
            seconds = min(ttl, MAX_CACHE_TTL if answer.records else MAX_NEGATIVE_CACHE_TTL)
            if seconds > 0:
                cache[key] = (self._reactor.seconds() + seconds, answer)
                cache.move_to_end(key)
                while len(cache) > MAX_CACHE_ENTRIES:
                    cache.popitem(last=False)
            for d in inFlight.pop(key, []):
                d.callback(answer)

        def failed(failure: Failure) -> None:
            for d in inFlight.pop(key, []):
                d.errback(failure)

        self._inThread(self._resolveAuthenticated, name, qname, rdtypeValue, lifetime).addCallbacks(
            answered, failed
        )
        return waiting

    def _resolveAuthenticated(
        self, name: str, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, lifetime: float
    ) -> tuple[AuthenticatedAnswer, float]:
        """
        Blocking: L{lookupAuthenticated}'s query, each resolver in turn.

        @return: the answer and the seconds it may be cached.
        """
        if not self._authenticatingResolvers:
            raise TemporaryDNSError(name, "no nameservers configured")
        deadline = time.monotonic() + lifetime
        lastError: Exception | None = None
        for resolver in self._authenticatingResolvers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                answer = resolver.resolve(
                    qname, rdtype, search=False, lifetime=remaining, raise_on_no_answer=False
                )
            except dns.resolver.NXDOMAIN as e:
                responses = list((e.kwargs.get("responses") or {}).values())
                authenticated = bool(responses) and all(r.flags & dns.flags.AD for r in responses)
                ttl = min((_negativeTTL(r) for r in responses), default=0.0)
                return AuthenticatedAnswer([], authenticated, exists=False), ttl
            except (dns.resolver.NoNameservers, dns.exception.Timeout) as e:
                lastError = e
                continue
            except dns.exception.DNSException as e:
                raise _mapException(name, e, lifetime) from None
            except OSError as e:
                raise TemporaryDNSError(name, f"DNS failure: {e}") from None
            response = answer.response
            authenticated = bool(response.flags & dns.flags.AD)
            if answer.rrset is None:
                return AuthenticatedAnswer([], authenticated), _negativeTTL(response)
            return (
                AuthenticatedAnswer(list(answer), authenticated),
                max(0.0, answer.expiration - time.time()),
            )
        if lastError is None:
            lastError = dns.exception.Timeout()
        raise _mapException(name, lastError, lifetime) from None


def resolverFromSettings(
    settings: Settings, reactor: IReactorTime, threadpool: ThreadPool | None = None
) -> Resolver:
    """
    The L{Resolver} for a server: C{SMTP_DNS_SERVERS} when set, else the
    system's nameservers.

    @param settings: a L{gopherpost.config.Settings}.
    @param reactor: see L{Resolver.__init__}.
    @param threadpool: see L{Resolver.__init__}.
    """
    return Resolver(settings.dnsServers, reactor, threadpool)
