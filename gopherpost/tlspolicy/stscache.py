# -*- test-case-name: tests.test_tlspolicy_mtasts -*-
"""
The durable MTA-STS policy cache: one JSON file per policy domain in a
directory of the spool's state directory (C{.gopherpost/mta-sts/}), so that
policies apply across restarts for their C{max_age} (RFC 8461 5.1): a
cached policy is what protects the first delivery after a restart from a
stripped TXT record or a blocked policy host.

The cache is read once at start-up (L{STSPolicyCache.load}); afterwards it
is served from memory and written through: each new or refreshed policy is
written atomically (temporary file, fsync, rename) in a thread.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from gopherpost.durable import replaceFile
from gopherpost.tlspolicy.sts import STSError, STSPolicy, parsePolicy

__all__ = ["CachedPolicy", "STSPolicyCache"]

_log = Logger()

_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9.\-]{0,251}[a-z0-9])?")
_SUFFIX = ".json"


class CachedPolicy(NamedTuple):
    """
    A policy as it was fetched.

    @ivar domain: the policy domain (lower case, A-labels).
    @ivar id: the C{id} of the TXT record it was fetched under.
    @ivar policy: the policy.
    @ivar fetched: when it was fetched (POSIX seconds, the reactor's clock).
    """

    domain: str
    id: str
    policy: STSPolicy
    fetched: float

    @property
    def expires(self) -> float:
        """
        When the policy stops applying: C{max_age} after it was fetched.
        """
        return self.fetched + self.policy.maxAge

    def toJSON(self) -> bytes:
        """
        The file's content.
        """
        record = {
            "domain": self.domain,
            "id": self.id,
            "fetched": self.fetched,
            "policy": self.policy.text,
        }
        return json.dumps(record, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def fromJSON(cls, data: bytes) -> CachedPolicy:
        """
        @raise ValueError: the file is not one L{toJSON} wrote.
        """
        try:
            record = json.loads(data)
            return cls(
                str(record["domain"]),
                str(record["id"]),
                parsePolicy(str(record["policy"]).encode("utf-8")),
                float(record["fetched"]),
            )
        except (KeyError, TypeError, ValueError, STSError) as e:
            raise ValueError(f"not a cached policy: {e}") from None


class STSPolicyCache:
    """
    Cached policies by domain, in memory and on disk.

    @ivar directory: where the files are.
    """

    def __init__(
        self, directory: str, runInThread: Callable[..., Deferred[Any]] | None = None
    ) -> None:
        """
        @param directory: created (mode 0700) by L{load} if missing.
        @param runInThread: C{runInThread(f, *args)} runs a blocking write
            and returns a L{Deferred}; default: run it at once (tests).
        """
        self.directory = directory
        self._runInThread = runInThread or (lambda f, *args: maybeDeferred(f, *args))
        self._policies: dict[str, CachedPolicy] = {}

    def load(self) -> None:
        """
        Read every cached policy (blocking: at start-up).  Files that do not
        load are logged and ignored.

        @raise OSError: the directory cannot be created or read.
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(_SUFFIX):
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(path, "rb") as f:
                    cached = CachedPolicy.fromJSON(f.read())
            except (OSError, ValueError) as e:
                _log.warn("Ignoring the cached MTA-STS policy {path}: {error}", path=path, error=e)
                continue
            if cached.domain + _SUFFIX == name:
                self._policies[cached.domain] = cached

    def get(self, domain: str) -> CachedPolicy | None:
        """
        The cached policy of C{domain}, expired or not.
        """
        return self._policies.get(domain)

    def __len__(self) -> int:
        return len(self._policies)

    def _path(self, domain: str) -> str:
        if _DOMAIN.fullmatch(domain) is None or ".." in domain:
            raise ValueError(f"{domain!r} is not a domain name")
        return os.path.join(self.directory, domain + _SUFFIX)

    def put(self, cached: CachedPolicy) -> Deferred[None]:
        """
        Remember C{cached} now, and on disk soon.

        @return: a L{Deferred} firing once the file is written; a failure
            to write is logged (the policy still applies from memory).
        """
        try:
            path = self._path(cached.domain)
        except ValueError as e:
            _log.warn("Not caching an MTA-STS policy: {error}", error=str(e))
            return succeed(None)
        self._policies[cached.domain] = cached
        d = self._runInThread(replaceFile, path, cached.toJSON(), 0o600)

        def failed(failure: Any) -> None:
            _log.error(
                "Could not write the MTA-STS policy of {domain} to {path}: {error}",
                domain=cached.domain,
                path=path,
                error=failure.getErrorMessage(),
            )

        return d.addCallbacks(lambda _: None, failed)

    def remove(self, domain: str) -> Deferred[None]:
        """
        Forget the policy of C{domain} (it expired).
        """
        self._policies.pop(domain, None)
        try:
            path = self._path(domain)
        except ValueError:
            return succeed(None)

        def unlink() -> None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

        return self._runInThread(unlink).addErrback(
            lambda f: _log.error("Could not remove {path}: {e}", path=path, e=f.getErrorMessage())
        )
