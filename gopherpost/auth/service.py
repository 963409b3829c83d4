# -*- test-case-name: tests.test_auth_service -*-
"""
Authenticated submission built from the settings, as one service: the
users (L{UserDirectory}), the password checker in its thread pool, the
lockouts over the checks' state store, the counter, and what the inbound
side asks of it.

L{makeAuthService} is the wiring's entry point.  For the inbound side:

  - L{AuthService.extendPortal}: gives the allow-list portal of a role the
    password checker;
  - L{AuthService.newCommand}: the AUTH command of one session
    (L{gopherpost.auth.command.AuthCommand});
  - L{AuthService.policiesFor}: the policies a role's chain gets
    (L{gopherpost.auth.policies}).

For operations: L{AuthService.prepareReload} (a live reload: the users file
and the C{SMTP_AUTH_*} settings), L{AuthService.controlCommands}
(C{users.reload} for C{gopherpostctl user}).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.logger import Logger

from gopherpost.auth.checker import PasswordChecker, SubmissionRealm, VerifierPool
from gopherpost.auth.command import FAILURE_DELAY, AuthCommand
from gopherpost.auth.directory import UserDirectory
from gopherpost.auth.lockout import LockoutParameters, Lockouts
from gopherpost.auth.metrics import AuthMetrics
from gopherpost.auth.policies import HeaderFromPolicy, RequireAuthPolicy, SenderRightsPolicy
from gopherpost.auth.replies import AuthReply, ReplyType
from gopherpost.auth.senders import SenderRights
from gopherpost.auth.users import UsersFileError
from gopherpost.checks.store import IStateStore
from gopherpost.config import ConfigError, Settings

__all__ = [
    "AUTH_FIELDS",
    "AUTH_ROLES",
    "AuthService",
    "authEnabled",
    "makeAuthService",
    "usersFilePath",
]

_log = Logger()

#: The roles that require AUTH before MAIL (and always offer it over TLS).
AUTH_ROLES = ("submission", "submissions")

#: The settings fields authenticated submission reads.
AUTH_FIELDS = frozenset(
    (
        "usersFile",
        "queuePath",
        "authOnSMTP",
        "authMaxFailures",
        "authCheckFrom",
        "authLockoutFailures",
        "authUserLockoutFailures",
        "authLockoutWindow",
        "authLockoutDuration",
        "authLockoutMaxDuration",
    )
)


def usersFilePath(settings: Settings) -> str:
    """
    C{SMTP_USERS_FILE}, or C{.gopherpost/users} in the spool.
    """
    if settings.usersFile:
        return settings.usersFile
    return os.path.join(os.path.abspath(settings.queuePath), ".gopherpost", "users")


def authEnabled(settings: Settings) -> bool:
    """
    Whether any listener offers AUTH: a submission listener, or
    C{SMTP_AUTH_ON_SMTP}.
    """
    return bool(settings.submissionListen or settings.submissionsListen or settings.authOnSMTP)


class AuthService(MultiService):
    """
    Authenticated submission of one process.

    @ivar directory: the users.
    @ivar checker: the password checker (L{IUsernamePassword}).
    @ivar lockouts: the lockouts.
    @ivar metrics: C{smtp_auth_attempts_total}, a prometheus_client
        collector.
    @ivar portal: a portal of its own (the checker and the realm), for
        sessions not given one.
    @ivar clock: the injected clock.
    @ivar replyType: makes replies (L{AuthReply}; the inbound C{Reply}).
    @ivar hostname: our name, for the 421.
    @ivar maxFailures: failed attempts in one session before the close.
    @ivar failureDelay: seconds before a failure is answered.
    @ivar onSMTP: whether the smtp role offers AUTH too.
    @ivar checkFrom: whether the header From is checked.
    """

    #: The service's name, and the part's in reload log lines.
    name = "authenticated submission"

    def __init__(
        self,
        directory: UserDirectory,
        lockouts: Lockouts,
        verifier: VerifierPool,
        clock: Any,
        hostname: str = "localhost",
        maxFailures: int = 3,
        failureDelay: float = FAILURE_DELAY,
        onSMTP: bool = False,
        checkFrom: bool = False,
        replyType: ReplyType | None = None,
        store: IStateStore | None = None,
    ) -> None:
        """
        @param store: a state store this service owns and closes when it
            stops (L{None}: the caller owns the lockouts' store).
        """
        MultiService.__init__(self)
        self.directory = directory
        self.lockouts = lockouts
        self.verifier = verifier
        verifier.setServiceParent(self)
        self.clock = clock
        self.hostname = hostname
        self.maxFailures = maxFailures
        self.failureDelay = failureDelay
        self.onSMTP = onSMTP
        self.checkFrom = checkFrom
        self.replyType: ReplyType = replyType or AuthReply
        self.metrics = AuthMetrics()
        self.checker = PasswordChecker(directory, verifier.run)
        self.portal = Portal(SubmissionRealm(directory), [self.checker])
        self._ownStore = store

    def stopService(self) -> Any:
        d = defer.maybeDeferred(MultiService.stopService, self)
        if self._ownStore is not None:
            store = self._ownStore
            d.addCallback(lambda _: store.close())
        return d

    # The inbound side

    def enabledFor(self, role: Any) -> bool:
        """
        Whether sessions of C{role} (a listener role, or its name) may
        authenticate: the submission roles, and smtp with
        C{SMTP_AUTH_ON_SMTP=true}.
        """
        name = getattr(role, "name", role)
        return name in AUTH_ROLES or (name == "smtp" and self.onSMTP)

    def extendPortal(self, portal: Portal) -> Portal:
        """
        Give C{portal} (a role's allow-list portal) the password checker
        and a realm that makes authenticated users too.

        @return: C{portal}.
        """
        from gopherpost.auth.checker import addPasswordChecker

        addPasswordChecker(portal, self.checker, self.directory)
        return portal

    def newCommand(self, context: Any, portal: Portal | None = None) -> AuthCommand:
        """
        The AUTH command of a new session.

        @param context: its L{gopherpost.auth.interfaces.IAuthContext}.
        @param portal: the portal to log in to (default L{portal}).
        """
        return AuthCommand(self, context, portal or self.portal)

    def rightsOf(self, user: str) -> SenderRights | None:
        """
        The sender rights of C{user} as the users file gives them now.
        """
        self.directory.refresh()
        record = self.directory.get(user)
        return None if record is None else record.rights

    def policiesFor(self, role: Any) -> dict[str, list[Any]]:
        """
        The policies of C{role}'s chain, by where they go: C{"afterTLS"}
        (first among the MAIL policies, after the TLS requirement) and
        C{"mail"} and C{"message"} (with the others of their stage).
        """
        name = getattr(role, "name", role)
        replyType = self.replyType
        placed: dict[str, list[Any]] = {"afterTLS": [], "mail": [], "message": []}
        if name in AUTH_ROLES:
            placed["afterTLS"].append(RequireAuthPolicy(replyType))
        if self.enabledFor(role):
            placed["mail"].append(SenderRightsPolicy(self.rightsOf, replyType))
            if self.checkFrom:
                placed["message"].append(HeaderFromPolicy(self.rightsOf, replyType))
        return placed

    # Operations

    #: The settings a reload gives this part (C{IReconfigurable}).
    fields = AUTH_FIELDS

    def prepareReload(self, settings: Settings) -> Callable[[], None]:
        """
        Read the users file and the C{SMTP_AUTH_*} settings of a reload
        without using them yet.

        @return: applies them.
        @raise ConfigError: naming C{SMTP_USERS_FILE}, when the file cannot
            be read or is not valid (then nothing changes).
        """
        path = usersFilePath(settings)
        try:
            useUsers = self.directory.prepare(path)
        except UsersFileError as e:
            raise ConfigError("SMTP_USERS_FILE", str(e)) from None
        parameters = LockoutParameters.fromSettings(settings)

        def apply() -> None:
            useUsers()
            self.lockouts.parameters = parameters
            self.maxFailures = settings.authMaxFailures
            self.onSMTP = settings.authOnSMTP
            self.checkFrom = settings.authCheckFrom

        return apply

    def reloadUsers(self) -> dict[str, Any]:
        """
        Read the users file again now (C{users.reload}).

        @return: C{{"reloaded": true, "users": N, "path": ...}}, or
            C{{"reloaded": false, "error": "..."}} when the file is not valid
            (the users from before stay).
        """
        try:
            count = self.directory.load()
        except UsersFileError as e:
            _log.error("Users file not re-read: {problem}", problem=str(e))
            return {"reloaded": False, "path": self.directory.path, "error": str(e)}
        _log.info(
            "Users file {path} re-read, users: {count}", path=self.directory.path, count=count
        )
        return {"reloaded": True, "path": self.directory.path, "users": count}

    def controlCommands(self) -> Mapping[str, Callable[..., Any]]:
        """
        The control socket's commands for users (C{IControlCommands}).
        """
        return {"users.reload": self.reloadUsers}


def makeAuthService(
    settings: Settings,
    stateDirectory: str,
    reactor: Any,
    store: IStateStore | None = None,
    replyType: ReplyType | None = None,
) -> AuthService | None:
    """
    Authenticated submission as the settings ask for it, or L{None} when no
    listener offers AUTH.

    @param stateDirectory: the spool's state directory (the local state
        store's file).
    @param store: the checks' state store, shared (default: one of its
        own, which the service closes).
    @param replyType: makes replies (the inbound C{Reply}).
    @raise ConfigError: the users file cannot be read or is not valid
        (C{SMTP_USERS_FILE}), or the state store cannot be opened.
    """
    if not authEnabled(settings):
        return None
    path = usersFilePath(settings)
    directory = UserDirectory(path, reactor)
    try:
        count = directory.load()
    except UsersFileError as e:
        raise ConfigError("SMTP_USERS_FILE", str(e)) from None
    if directory.exists:
        _log.info("Users file {path}, users: {count}", path=path, count=count)
    else:
        _log.info(
            "Users file {path} does not exist yet: nobody can authenticate until users "
            "are added (gopherpostctl user add NAME)",
            path=path,
        )
    owned = None
    if store is None:
        from gopherpost.checks.service import makeStore

        store = owned = makeStore(settings, stateDirectory, reactor)
    lockouts = Lockouts(store, reactor, LockoutParameters.fromSettings(settings))
    return AuthService(
        directory,
        lockouts,
        VerifierPool(reactor),
        reactor,
        hostname=settings.hostname,
        maxFailures=settings.authMaxFailures,
        onSMTP=settings.authOnSMTP,
        checkFrom=settings.authCheckFrom,
        replyType=replyType,
        store=owned,
    )
