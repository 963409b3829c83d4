# -*- test-case-name: tests.test_checks_dkim -*-
"""
DKIM (RFC 6376; Ed25519, RFC 8463) and ARC (RFC 8617) verification with
dkimpy.

Each C{DKIM-Signature} is verified on its own; the ARC chain as a whole.
dkimpy runs in a worker thread of its own pool, its key lookups go through
the server's resolver (L{gopherpost.checks.threaddns}): a key that cannot be
fetched now gives C{temperror}, never a pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dkim as _dkimpy
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from gopherpost.checks.threaddns import DNSUnavailable, ThreadDNS

__all__ = ["ARCResult", "DKIMResult", "DKIMVerifier", "MAX_SIGNATURES"]

#: Signatures verified per message at most; later ones are not looked at.
MAX_SIGNATURES = 10

#: Seconds the verification of one message may take in all.
DEFAULT_TIMEOUT = 20.0

#: RSA keys smaller than this do not verify (RFC 8301).
MINIMUM_KEY_BITS = 1024


@dataclass(frozen=True)
class DKIMResult:
    """
    The outcome of one C{DKIM-Signature}.

    @ivar result: C{pass}, C{fail}, C{neutral} (a signature too broken to
        evaluate), C{temperror} or C{permerror} (RFC 8601, 2.7.1).
    @ivar domain: the signature's C{d=} (lower case).
    @ivar selector: its C{s=}.
    @ivar b: the first 8 characters of its C{b=}, to tell signatures apart
        (C{header.b}, RFC 6008).
    @ivar algorithm: its C{a=}.
    @ivar reason: why it did not pass, one line (empty when it passed).
    """

    result: str
    domain: str
    selector: str
    b: str
    algorithm: str
    reason: str = ""

    def asMetadata(self) -> dict[str, str]:
        """
        The result as JSON-able data for the envelope's metadata.
        """
        return {
            "result": self.result,
            "domain": self.domain,
            "selector": self.selector,
            "b": self.b,
            "algorithm": self.algorithm,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ARCResult:
    """
    The outcome of ARC chain validation.

    @ivar result: C{none} (no ARC sets), C{pass}, C{fail} or C{temperror}.
    @ivar instances: the number of ARC sets.
    @ivar sealer: the C{d=} of the newest C{ARC-Seal} (who handed the
        message to us), or C{""}.
    @ivar reason: dkimpy's comment, one line.
    """

    result: str
    instances: int = 0
    sealer: str = ""
    reason: str = ""

    def asMetadata(self) -> dict[str, object]:
        """
        The result as JSON-able data for the envelope's metadata.
        """
        return {
            "result": self.result,
            "instances": self.instances,
            "sealer": self.sealer,
            "reason": self.reason,
        }


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    line = " ".join(str(value).split())
    return "".join(c for c in line if " " <= c <= "~")[:200]


def _tags(value: bytes) -> dict[bytes, bytes]:
    try:
        return dict(_dkimpy.parse_tag_value(b"".join(value.split())))
    except Exception:
        return {}


def _resultFor(
    domain: str, selector: str, b: str, algorithm: str, outcome: str, reason: str = ""
) -> DKIMResult:
    return DKIMResult(outcome, domain, selector, b, algorithm, reason)


class DKIMVerifier:
    """
    Verifies DKIM signatures and ARC chains in a bounded thread pool.
    """

    def __init__(
        self,
        dns: ThreadDNS,
        reactor: Any,
        threadpool: Any,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """
        @param dns: answers dkimpy's key lookups.
        @param reactor: for results and the timeout.
        @param threadpool: the pool dkimpy runs in (not the resolver's).
        @param timeout: seconds one message's verification may take.
        """
        self._dns = dns
        self._reactor = reactor
        self._threadpool = threadpool
        self.timeout = timeout

    def _inThread(self, f: Callable[[], Any], onFailure: Callable[[str], Any]) -> defer.Deferred:
        def failed(failure: Failure) -> Any:
            if failure.check(defer.TimeoutError):
                return onFailure(f"verification timed out after {self.timeout:g} s")
            return onFailure(f"verification failed: {_text(failure.value)}")

        d = deferToThreadPool(self._reactor, self._threadpool, f)
        d.addTimeout(self.timeout, self._reactor)
        return d.addErrback(failed)

    def verify(self, message: bytes) -> defer.Deferred:
        """
        Verify every C{DKIM-Signature} of C{message} (at most
        L{MAX_SIGNATURES}).

        @param message: the message as received (CRLF line ends).
        @return: a L{defer.Deferred} firing with a list of L{DKIMResult}, in
            the order of the header fields; empty when there is no
            signature.  It never fails.
        """
        return self._inThread(
            lambda: self._verifyAll(message),
            lambda reason: [DKIMResult("temperror", "", "", "", "", reason)],
        )

    def _verifyAll(self, message: bytes) -> list[DKIMResult]:
        try:
            verifier = _dkimpy.DKIM(message, minkey=MINIMUM_KEY_BITS, timeout=5)
        except Exception as e:
            return [DKIMResult("permerror", "", "", "", "", f"unparsable message: {_text(e)}")]
        signatures = [v for n, v in verifier.headers if n.lower() == b"dkim-signature"]
        results = []
        for index, value in enumerate(signatures[:MAX_SIGNATURES]):
            tags = _tags(value)
            domain = _text(tags.get(b"d", b"")).lower().rstrip(".")
            selector = _text(tags.get(b"s", b""))
            b = _text(tags.get(b"b", b""))[:8]
            algorithm = _text(tags.get(b"a", b""))

            result = functools.partial(_resultFor, domain, selector, b, algorithm)

            if not tags:
                results.append(result("neutral", "unparsable signature"))
                continue
            results.append(self._verifyOne(verifier, index, tags, result))
        return results

    def _verifyOne(
        self,
        verifier: Any,
        index: int,
        tags: dict[bytes, bytes],
        result: Callable[..., DKIMResult],
    ) -> DKIMResult:
        try:
            _dkimpy.validate_signature_fields(tags)
        except _dkimpy.DKIMException as e:
            return result("neutral", f"bad signature: {_text(e)}")
        keyName = tags[b"s"] + b"._domainkey." + tags[b"d"]
        try:
            key = self._dns.txt(keyName)
        except DNSUnavailable as e:
            return result("temperror", f"key lookup failed: {_text(e)}")
        if key is None:
            return result("permerror", f"no key at {_text(keyName)}")
        try:
            _dkimpy.evaluate_pk(keyName, key)
        except _dkimpy.DKIMException as e:
            return result("permerror", f"bad key: {_text(e)}")
        try:
            ok = verifier.verify(idx=index, dnsfunc=lambda name, timeout=5: key)
        except _dkimpy.ValidationError as e:
            return result("fail", _text(e))
        except _dkimpy.KeyFormatError as e:
            return result("permerror", f"bad key: {_text(e)}")
        except _dkimpy.DKIMException as e:
            return result("neutral", _text(e))
        except Exception as e:
            return result("permerror", f"cannot verify: {_text(e)}")
        return result("pass") if ok else result("fail", "signature did not verify")

    def verifyARC(self, message: bytes) -> defer.Deferred:
        """
        Validate the ARC chain of C{message}.

        @return: a L{defer.Deferred} firing with an L{ARCResult}; it never
            fails.
        """
        return self._inThread(
            lambda: self._verifyChain(message),
            lambda reason: ARCResult("temperror", reason=reason),
        )

    def _verifyChain(self, message: bytes) -> ARCResult:
        try:
            arc = _dkimpy.ARC(message, minkey=MINIMUM_KEY_BITS, timeout=5)
            cv, sets, comment = arc.verify(dnsfunc=self._dns.txt)
        except DNSUnavailable as e:
            return ARCResult("temperror", reason=f"key lookup failed: {_text(e)}")
        except _dkimpy.DnsTimeoutError as e:
            return ARCResult("temperror", reason=f"key lookup failed: {_text(e)}")
        except Exception as e:
            return ARCResult("fail", reason=_text(e))
        if not sets and cv == _dkimpy.CV_None:
            return ARCResult("none", reason=_text(comment))
        sealer = _text(sets[0].get("as-domain", b"")).lower().rstrip(".") if sets else ""
        result = "pass" if cv == _dkimpy.CV_Pass else "fail"
        return ARCResult(result, len(sets), sealer, _text(comment))
