# -*- test-case-name: tests.test_checks_spf,tests.test_checks_dkim -*-
"""
DNS for libraries that look names up themselves (pyspf, dkimpy), from a
worker thread.

pyspf and dkimpy are synchronous and call a DNS function as they evaluate.
They run in a thread pool of their own (never on the reactor thread); the
functions here answer them through the server's L{gopherpost.dns.Resolver}
(C{SMTP_DNS_SERVERS}, its cache and its timeouts) by waiting, in that worker
thread, for a lookup started on the reactor thread.  The worker pool must
not be the pool the resolver runs its queries in, or a full pool would wait
for itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from gopherpost.dns import PermanentDNSError

__all__ = ["DNSUnavailable", "ThreadDNS"]


class DNSUnavailable(Exception):
    """
    A lookup made for a library got no answer now (SERVFAIL, timeout): the
    check's result is a temporary error.
    """


class ThreadDNS:
    """
    Blocking lookups for worker threads, answered by an asynchronous
    resolver on the reactor thread.

    @ivar lookups: how many lookups were asked for.
    """

    def __init__(self, resolver: Any, reactor: Any, timeout: float = 5.0) -> None:
        """
        @param resolver: a L{gopherpost.dns.Resolver} (anything with
            C{lookupRecords(name, rdtype, lifetime)}).
        @param reactor: the reactor the resolver runs on.
        @param timeout: seconds one lookup may take.
        """
        self._resolver = resolver
        self._reactor = reactor
        self.timeout = timeout
        self._lock = threading.Lock()
        self.lookups = 0
        #: once true, lookups fail at once (see L{close}).
        self.closed = False

    def close(self) -> None:
        """
        Fail every later lookup at once: called as the server stops, so
        that the checks' threads end quickly.
        """
        with self._lock:
            self.closed = True

    def records(self, name: str, rdtype: str) -> list[Any]:
        """
        Blocking: the rdatas of C{name}'s records of C{rdtype}; empty when
        the name does not exist or has none.  Call it from a worker thread
        only.

        @raise DNSUnavailable: on SERVFAIL, timeout or no nameserver.
        """
        with self._lock:
            self.lookups += 1
            if self.closed:
                raise DNSUnavailable(f"{name}/{rdtype}: the server is stopping")
        done = threading.Event()
        outcome: list[tuple[bool, Any]] = []

        def finished(result: Any, ok: bool) -> None:
            outcome.append((ok, result))
            done.set()

        def lookup() -> None:
            d = defer.maybeDeferred(self._resolver.lookupRecords, name, rdtype, self.timeout)
            d.addTimeout(self.timeout + 1.0, self._reactor)
            d.addCallbacks(finished, finished, callbackArgs=(True,), errbackArgs=(False,))

        self._reactor.callFromThread(lookup)
        # Bounded even when the reactor thread is busy or stopping (a
        # thread pool being joined at shut-down must not wait for ever).
        if not done.wait(self.timeout + 2.0):
            raise DNSUnavailable(f"{name}/{rdtype}: no answer within {self.timeout:g} s")
        ok, result = outcome[0]
        if ok:
            return list(result)
        error = result.value
        if isinstance(error, PermanentDNSError):
            return []
        raise DNSUnavailable(f"{name}/{rdtype}: {error}")

    def txt(self, name: bytes | str, timeout: float = 5.0) -> bytes | None:
        """
        The TXT function dkimpy takes as C{dnsfunc}: the first TXT record of
        C{name}, its strings joined, or L{None}.

        @raise DNSUnavailable: when the lookup failed temporarily.
        """
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        rdatas = self.records(text.rstrip("."), "TXT")
        if not rdatas:
            return None
        return b"".join(rdatas[0].strings)

    def spfLookup(
        self, name: str, qtype: str, strict: object = None, timeout: object = None
    ) -> list[tuple[tuple[str, str], Any]]:
        """
        A lookup in the shape of pyspf's C{DNSLookup}: C{((name, type),
        value)} pairs, as its dnspython driver builds them.

        @raise spf.TempError: when the lookup failed temporarily.
        """
        import spf

        try:
            rdatas = self.records(name, qtype)
        except DNSUnavailable as e:
            raise spf.TempError(f"DNS {e}") from None
        answers: list[tuple[tuple[str, str], Any]] = []
        for rdata in rdatas:
            value: Any
            if qtype in ("A", "AAAA"):
                value = rdata.address
            elif qtype == "MX":
                value = (rdata.preference, rdata.exchange)
            elif qtype == "PTR":
                value = rdata.target.to_text(True)
            elif qtype in ("TXT", "SPF"):
                value = list(rdata.strings)
            else:
                continue
            answers.append(((name, qtype), value))
        return answers


# pyspf calls its module-level DNSLookup; one dispatcher is installed over it
# once, and a thread that evaluates SPF for GopherPost sets its own lookup
# function for the duration of the check.  Other threads get pyspf's own.
_current = threading.local()
_installLock = threading.Lock()
_installed = False


def _dispatch(name: str, qtype: str, strict: object = True, timeout: object = 20) -> Any:
    lookup = getattr(_current, "lookup", None)
    if lookup is None:
        return _dispatch.original(name, qtype, strict, timeout)  # type: ignore[attr-defined]
    return lookup(name, qtype, strict, timeout)


def installSPFDispatch() -> None:
    """
    Put the per-thread dispatcher in front of pyspf's DNS function (once).
    """
    global _installed
    with _installLock:
        if _installed:
            return
        import spf

        _dispatch.original = spf.DNSLookup  # type: ignore[attr-defined]
        spf.DNSLookup = _dispatch
        _installed = True


def withSPFLookup(lookup: Callable[..., Any], f: Callable[[], Any]) -> Any:
    """
    Run C{f()} in this thread with pyspf's lookups answered by C{lookup}.
    """
    installSPFDispatch()
    previous = getattr(_current, "lookup", None)
    _current.lookup = lookup
    try:
        return f()
    finally:
        _current.lookup = previous
