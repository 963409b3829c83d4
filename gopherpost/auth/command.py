# -*- test-case-name: tests.test_auth_session -*-
"""
The AUTH command of one session (RFC 4954), as L{IAuthCommand}: the
inbound session hands it the command and the lines of the exchange, and
writes the replies it returns.

The replies:

  - C{235 2.7.0 Authentication successful};
  - C{334 <base64>}: the exchange goes on (PLAIN's empty challenge,
    LOGIN's C{Username:} and C{Password:});
  - C{535 5.7.8 Authentication credentials invalid}: wrong user name or
    password, or PLAIN acting as another user;
  - C{454 4.7.0 Temporary authentication failure}: the client's network
    or the user is locked out (the password is not checked), or the check
    could not be made;
  - C{501 5.7.0 Authentication aborted}: the client sent C{*};
  - C{501 5.5.2 ...}: not base64, or not a message of the mechanism (an
    empty response, C{=} where a message is needed, NULs in the wrong
    places); C{500 5.5.6 Authentication Exchange line is too long} over
    12,288 octets;
  - C{503 5.5.1}: AUTH where it is not enabled, before EHLO, a second time,
    or during a mail transaction; C{538 5.7.11 Encryption required for
    requested authentication mechanism} before TLS; C{501 5.5.4} without
    a mechanism; C{504 5.5.4 Unrecognized authentication type}.

Every failed attempt (C{535}, C{454}, the malformed ones) is answered
after L{FAILURE_DELAY} seconds on the injected clock, which holds up this
client only; the L{AuthService}'s C{maxFailures}-th failure of a session
is followed by C{421 4.7.0} and the close.  Each attempt is counted in
C{smtp_auth_attempts_total} and logged with the user name and the client's
address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.auth import metrics as _metrics
from gopherpost.auth.interfaces import IAuthCommand, IAuthenticatedUser
from gopherpost.auth.replies import REASON
from gopherpost.auth.sasl import (
    ABORTED,
    AUTHZID,
    MAX_RESPONSE,
    MECHANISMS,
    TOO_LONG,
    Challenge,
    Credentials,
    SASLError,
    decodeResponse,
)

if TYPE_CHECKING:
    from gopherpost.auth.service import AuthService

__all__ = ["AuthCommand", "FAILURE_DELAY"]

_log = Logger()

#: Seconds before a failed attempt is answered.
FAILURE_DELAY = 1.0

_LOG_NAME_LIMIT = 64


def _shown(name: str) -> str:
    """
    A client-given user name made safe for a log line.
    """
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in name)
    return text if len(text) <= _LOG_NAME_LIMIT else text[: _LOG_NAME_LIMIT - 3] + "..."


@implementer(IAuthCommand)
class AuthCommand:
    """
    AUTH in one session (see the module docstring and L{IAuthCommand}).

    @param service: the server's L{AuthService}.
    @param context: the session's L{IAuthContext}.
    @param portal: the portal that checks passwords.
    """

    def __init__(self, service: AuthService, context: Any, portal: Portal) -> None:
        self._service = service
        self._context = context
        self._portal = portal
        self._exchange: Any = None
        self._mechanism = ""
        self._timers: list[Any] = []
        self._lost = False
        self.failures = 0
        self.user: Any = None

    # IAuthCommand

    @property
    def inProgress(self) -> bool:
        """
        Whether an exchange waits for the client's next line.
        """
        return self._exchange is not None

    def keyword(self) -> str | None:
        """
        C{AUTH PLAIN LOGIN} when offered now.
        """
        if self._service.enabledFor(self._context.role) and self._context.tls is not None:
            return "AUTH " + " ".join(MECHANISMS)
        return None

    def command(self, argument: bytes, inTransaction: bool) -> Any:
        """
        The AUTH command.
        """
        service = self._service
        context = self._context
        if not service.enabledFor(context.role):
            return self._reply(503, "5.5.1 Error: authentication not enabled")
        if context.helo is None or not context.extended:
            return self._reply(503, "5.5.1 Error: send EHLO first")
        if context.authenticatedUser is not None:
            return self._reply(503, "5.5.1 Error: already authenticated")
        if inTransaction:
            return self._reply(503, "5.5.1 Error: MAIL transaction in progress")
        if context.tls is None:
            return self._reply(
                538, "5.7.11 Encryption required for requested authentication mechanism"
            )
        if len(argument) > MAX_RESPONSE:
            self._mechanism = "PLAIN"
            return self._malformed(SASLError(TOO_LONG, "an AUTH command line over the limit"))
        words = argument.split()
        if not words or len(words) > 2:
            return self._reply(501, "5.5.4 Syntax: AUTH mechanism [initial-response]")
        mechanism = words[0].upper().decode("ascii", "replace")
        exchangeType = MECHANISMS.get(mechanism)
        if exchangeType is None:
            return self._reply(504, "5.5.4 Unrecognized authentication type")
        self._mechanism = mechanism
        initial = words[1] if len(words) == 2 else None

        def begin(lockedUntil: float | None) -> Any:
            if lockedUntil is not None:
                _log.info(
                    "AUTH {mechanism} from {client} refused: its network is locked out",
                    mechanism=mechanism,
                    client=context.clientAddress,
                )
                return self._failed(_metrics.LOCKED, self._locked(), None)
            exchange = exchangeType()
            try:
                decoded = None if initial is None else decodeResponse(initial, initial=True)
                step = exchange.start(decoded)
            except SASLError as e:
                return self._saslError(e)
            self._exchange = exchange
            return self._step(step)

        return self._guarded(service.lockouts.clientLockedUntil(context.clientAddress), begin)

    def lineReceived(self, line: bytes) -> Any:
        """
        A response line of the exchange in progress.
        """
        exchange = self._exchange
        if exchange is None:
            return self._reply(503, "5.5.1 Error: no authentication in progress")
        try:
            step = exchange.respond(decodeResponse(line))
        except SASLError as e:
            self._exchange = None
            return self._saslError(e)
        return self._step(step)

    def lineTooLong(self) -> Any:
        """
        A response line over the framing's limit.
        """
        self._exchange = None
        return self._saslError(SASLError(TOO_LONG, "a response line over the limit"))

    def connectionLost(self) -> None:
        """
        Cancel the delayed answers.
        """
        self._lost = True
        self._exchange = None
        timers, self._timers = self._timers, []
        for timer in timers:
            if timer.active():
                timer.cancel()

    # The exchange

    def _reply(self, code: int, text: str) -> Any:
        return self._service.replyType(code, text, reason=REASON)

    def _locked(self) -> Any:
        return self._reply(454, "4.7.0 Temporary authentication failure")

    def _step(self, step: Challenge | Credentials) -> Any:
        if isinstance(step, Challenge):
            return self._service.replyType(334, step.text)
        self._exchange = None
        return self._verify(step)

    def _saslError(self, error: SASLError) -> Any:
        client = self._context.clientAddress
        if error.kind == ABORTED:
            _log.info(
                "AUTH {mechanism} from {client} cancelled by the client",
                mechanism=self._mechanism,
                client=client,
            )
            return self._reply(501, "5.7.0 Authentication aborted")
        if error.kind == AUTHZID:
            _log.info(
                "AUTH {mechanism} from {client} failed: {detail}",
                mechanism=self._mechanism,
                client=client,
                detail=_shown(error.detail),
            )
            return self._failed(
                _metrics.FAILURE, self._reply(535, "5.7.8 Authentication credentials invalid"), None
            )
        return self._malformed(error)

    def _malformed(self, error: SASLError) -> Any:
        _log.info(
            "AUTH {mechanism} from {client} failed: malformed response ({detail})",
            mechanism=self._mechanism,
            client=self._context.clientAddress,
            detail=error.detail,
        )
        if error.kind == TOO_LONG:
            reply = self._reply(500, "5.5.6 Authentication Exchange line is too long")
        else:
            reply = self._reply(501, "5.5.2 Error: malformed authentication response")
        return self._failed(_metrics.MALFORMED, reply, None)

    def _verify(self, credentials: Credentials) -> Any:
        service = self._service
        context = self._context
        client = context.clientAddress
        service.directory.refresh()
        record = service.directory.get(credentials.username)
        user = _shown(credentials.username)

        def unlessLocked(lockedUntil: float | None) -> Any:
            if lockedUntil is not None:
                _log.info(
                    "AUTH {mechanism} for user {user} from {client} refused: the user is "
                    "locked out",
                    mechanism=self._mechanism,
                    user=user,
                    client=client,
                )
                return self._failed(_metrics.LOCKED, self._locked(), None)
            d = self._portal.login(
                UsernamePassword(
                    credentials.username.encode("utf-8"), credentials.password.encode("utf-8")
                ),
                None,
                IAuthenticatedUser,
            )
            return d.addCallbacks(self._succeeded, self._refused, errbackArgs=(user, record))

        if record is None:
            return unlessLocked(None)
        return self._guarded(service.lockouts.userLockedUntil(record.name, client), unlessLocked)

    def _succeeded(self, result: tuple[Any, Any, Any]) -> Any:
        _, avatar, _ = result
        context = self._context
        self.user = avatar
        context.authenticatedUser = avatar.name
        context.authMechanism = self._mechanism
        self._service.metrics.count(self._mechanism, _metrics.SUCCESS)
        _log.info(
            "AUTH {mechanism} for user {user} from {client} succeeded",
            mechanism=self._mechanism,
            user=avatar.name,
            client=context.clientAddress,
        )
        return self._reply(235, "2.7.0 Authentication successful")

    def _refused(self, failure: Failure, user: str, record: Any) -> Any:
        client = self._context.clientAddress
        if not failure.check(UnauthorizedLogin):
            _log.failure(
                "Checking the password of user {user} from {client} failed",
                failure,
                user=user,
                client=client,
            )
            return self._reply(454, "4.7.0 Temporary authentication failure")
        _log.info(
            "AUTH {mechanism} for user {user} from {client} failed: {why} "
            "(failure {count} of {limit} in this session)",
            mechanism=self._mechanism,
            user=user,
            client=client,
            why=failure.getErrorMessage(),
            count=self.failures + 1,
            limit=self._service.maxFailures,
        )
        return self._failed(
            _metrics.FAILURE,
            self._reply(535, "5.7.8 Authentication credentials invalid"),
            record.name if record is not None else None,
        )

    # Failures

    def _failed(self, result: str, reply: Any, user: str | None) -> Any:
        """
        Count a failed attempt, record it for the lockouts, and answer after
        the delay (with C{421} and the close at the session's limit).

        @param user: the existing user whose password failed, if any.
        """
        service = self._service
        context = self._context
        self.failures += 1
        service.metrics.count(self._mechanism, result)
        response: Any = reply
        if self.failures >= service.maxFailures:
            _log.info(
                "Closing the session of {client}: {count} failed AUTH attempts",
                client=context.clientAddress,
                count=self.failures,
            )
            host = getattr(context, "serverName", None) or service.hostname
            closing = self._reply(421, f"4.7.0 {host} Error: too many failed authentications")
            response = (reply, closing.closing())
        if result == _metrics.LOCKED:
            recorded: Deferred[Any] = succeed(None)
        else:
            recorded = service.lockouts.failed(context.clientAddress, user)
            recorded.addCallback(self._lockoutsStarted, user)
            recorded.addErrback(self._storeFailed, "recording a failed AUTH")
        return recorded.addCallback(lambda _: self._later(response))

    def _lockoutsStarted(self, started: Any, user: str | None) -> None:
        client = self._context.clientAddress
        if started.client is not None:
            _log.warn(
                "AUTH lockout: client network {network} locked out for {seconds:.0f} s "
                "after failed attempts (the last from {client})",
                network=self._service.lockouts.network(client),
                seconds=started.client - self._service.clock.seconds(),
                client=client,
            )
        if started.user is not None:
            _log.warn(
                "AUTH lockout: user {user} locked out for {seconds:.0f} s after failed "
                "attempts (the last from {client})",
                user=user,
                seconds=started.user - self._service.clock.seconds(),
                client=client,
            )

    def _storeFailed(self, failure: Failure, what: str) -> None:
        _log.warn(
            "AUTH lockouts skipped for {client}: {what} failed ({problem})",
            client=self._context.clientAddress,
            what=what,
            problem=failure.getErrorMessage(),
        )
        return None

    def _guarded(self, d: Deferred[Any], then: Any) -> Any:
        """
        C{then(result of d)}; a store that does not answer counts as no
        lockout (logged): a lost counter must not keep users out.
        """
        d.addErrback(self._storeFailed, "the lockout check")
        return d.addCallback(then)

    def _later(self, response: Any) -> Deferred[Any]:
        """
        C{response}, after L{FAILURE_DELAY}; never, if the connection goes
        first.
        """
        d: Deferred[Any] = Deferred()
        if self._lost:
            return d
        timer = self._service.clock.callLater(self._service.failureDelay, d.callback, response)
        self._timers = [t for t in self._timers if t.active()] + [timer]
        return d
