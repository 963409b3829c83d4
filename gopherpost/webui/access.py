# -*- test-case-name: tests.test_webui_access -*-
"""
Who may use the web UI and the API.

  - Bound to loopback without C{SMTP_WEB_AUTH}: anyone on this machine, but
    only under a loopback host name (C{Host: 127.0.0.1:8025},
    C{localhost:8025}): a web page elsewhere cannot reach it through DNS
    rebinding.
  - With C{SMTP_WEB_AUTH}: HTTP basic authentication, checked by a
    L{twisted.cred} checker for L{IUsernamePassword}.  Today that is
    L{ScryptChecker} (one C{user:scrypt-hash} pair); the users file of the
    submission issue plugs in as another checker (users with a C{web}
    right).  scrypt is slow on purpose, so it runs in a thread, and a
    successful check is remembered for L{CACHE_SECONDS} (by a keyed hash of
    the credentials, never the password itself).
  - Every request that changes something comes with a non-GET method (the
    routes say so) and is refused cross-origin: a browser's C{Origin} must
    be this server's own, and C{Sec-Fetch-Site} must not say another site.
    Clients that are not browsers send neither and are not affected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from gopherpost.webui.http import applySecurityHeaders
from gopherpost.webui.listen import isLoopbackHost
from gopherpost.webui.password import ScryptHash, hashPassword, parseScryptHash

__all__ = ["AccessGuard", "ScryptChecker", "CACHE_SECONDS", "isSafeMethod", "originProblem"]

_log = Logger()

#: Seconds a successful password check is remembered.
CACHE_SECONDS = 300.0
_CACHE_SIZE = 64
_SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")


def isSafeMethod(method: bytes) -> bool:
    """
    Whether a request method never changes anything.
    """
    return method in _SAFE_METHODS


@implementer(ICredentialsChecker)
class ScryptChecker:
    """
    Checks user names and passwords against scrypt hashes.

    @param users: user name -> hash (L{gopherpost.webui.password}).
    @param runInThread: C{runInThread(f, *args) -> Deferred}.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: Mapping[str, str], runInThread: Callable[..., Deferred]) -> None:
        self._users = {name: parseScryptHash(h) for name, h in users.items()}
        self._runInThread = runInThread
        # Unknown users cost a check too, so that timing does not tell
        # which names exist.
        self._decoy: ScryptHash | None = None

    def requestAvatarId(self, credentials: Any) -> Deferred:
        """
        The user name, if the password is right; else L{UnauthorizedLogin}.
        """
        try:
            user = credentials.username.decode("utf-8")
            password = credentials.password.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            return fail(UnauthorizedLogin())
        expected = self._users.get(user)
        if expected is None:
            if self._decoy is None:
                self._decoy = hashPassword(secrets.token_hex(8))
            expected = self._decoy

        def checked(ok: bool) -> str:
            if ok and user in self._users:
                return user
            raise UnauthorizedLogin()

        return self._runInThread(expected.verify, password).addCallback(checked)


def originProblem(request: Request) -> str | None:
    """
    Why a request that changes something must be refused as cross-origin,
    or L{None}.
    """
    fetchSite = (request.getHeader(b"sec-fetch-site") or b"").lower()
    if fetchSite in (b"cross-site", b"same-site"):
        return "cross-site request refused"
    origin = request.getHeader(b"origin")
    if origin is None:
        return None
    host = request.getHeader(b"host") or b""
    scheme = b"https" if request.isSecure() else b"http"
    if origin.lower() != scheme + b"://" + host.lower():
        return "cross-origin request refused"
    return None


def _hostOf(header: bytes) -> str:
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _loopbackName(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost") or isLoopbackHost(host)


@implementer(IResource)
class AccessGuard(Resource):
    """
    Wraps the whole site: host check, cross-origin refusal, then (with a
    checker) basic authentication, then the wrapped resource renders.

    @param checker: checks passwords; L{None}: no authentication (loopback).
    @param checkHost: refuse requests whose C{Host} is not a loopback name
        (TCP on loopback without authentication).
    """

    isLeaf = True

    def __init__(
        self,
        wrapped: IResource,
        checker: ICredentialsChecker | None,
        checkHost: bool,
        clock: Any,
        realm: str = "GopherPost",
    ) -> None:
        super().__init__()
        self._wrapped = wrapped
        self._checker = checker
        self._checkHost = checkHost
        self._clock = clock
        self._realm = realm
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, float] = OrderedDict()

    def render(self, request: Request) -> Any:
        """
        Check, then hand over to the wrapped resource.
        """
        if self._checkHost and not _loopbackName(_hostOf(request.getHeader(b"host") or b"")):
            return self._refuse(request, 403, "host not allowed: use 127.0.0.1 or localhost")
        if not isSafeMethod(request.method):
            problem = originProblem(request)
            if problem is not None:
                return self._refuse(request, 403, problem)
        if self._checker is None:
            return self._hand(request)
        header = request.getHeader(b"authorization") or b""
        credentials = _basic(header)
        if credentials is None:
            return self._unauthorized(request)
        key = hmac.new(self._key, header, hashlib.sha256).digest()
        now = self._clock.seconds()
        seen = self._cache.get(key)
        if seen is not None and now - seen < CACHE_SECONDS:
            self._cache.move_to_end(key)
            return self._hand(request)
        d = self._checker.requestAvatarId(credentials)

        def allowed(_: object) -> None:
            self._cache[key] = now
            self._cache.move_to_end(key)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
            request.render(self._wrapped)

        def refused(failure: Any) -> None:
            if not failure.check(UnauthorizedLogin):
                _log.failure("Checking web UI credentials failed", failure)
            body = self._unauthorized(request)
            if request.method != b"HEAD":
                request.write(body)
            request.finish()

        d.addCallbacks(allowed, refused)
        d.addErrback(lambda f: _log.failure("Web UI request failed", f))
        return NOT_DONE_YET

    def _hand(self, request: Request) -> Any:
        return self._wrapped.render(request)

    def _refuse(self, request: Request, code: int, text: str) -> bytes:
        applySecurityHeaders(request)
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return (text + "\n").encode("utf-8")

    def _unauthorized(self, request: Request) -> bytes:
        body = self._refuse(request, 401, "401 authentication required")
        request.setHeader(
            b"WWW-Authenticate", f'Basic realm="{self._realm}", charset="UTF-8"'.encode("ascii")
        )
        return body


def _basic(header: bytes) -> UsernamePassword | None:
    scheme, _, value = header.partition(b" ")
    if scheme.lower() != b"basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return UsernamePassword(user, password)
