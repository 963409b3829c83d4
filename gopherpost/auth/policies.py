# -*- test-case-name: tests.test_auth_policies -*-
"""
Authenticated submission as policies of the inbound chain (the hooks of
the chain's C{IPolicy}: each returns L{None} to go on or a reply).

  - L{RequireAuthPolicy} (MAIL; the submission roles): C{530 5.7.0
    Authentication required} until AUTH succeeded.
  - L{SenderRightsPolicy} (MAIL): an authenticated user may use as
    envelope sender only the addresses they own (Postfix's
    C{reject_sender_login_mismatch}): C{553 5.7.1 <addr>: Sender address
    rejected: not owned by user <name>}; C{<>} is allowed.  For them it
    stands in for C{SMTP_REQUIRE_LOCAL_DOMAIN}.
  - L{HeaderFromPolicy} (end of data; C{SMTP_AUTH_CHECK_FROM=true}): every
    address of the header From must be theirs too (C{550 5.7.1}); a From
    that is missing or does not parse cleanly is refused as well.

Unauthenticated sessions pass the last two untouched.  L{authMetadata} is
what the envelope's metadata keeps of the authentication (the user name is
never put in a header).
"""

from __future__ import annotations

from collections.abc import Callable
from email.headerregistry import HeaderRegistry
from typing import Any

from gopherpost.auth.replies import AuthReply, ReplyType
from gopherpost.auth.senders import SenderRights

__all__ = [
    "HeaderFromPolicy",
    "RequireAuthPolicy",
    "SenderRightsPolicy",
    "authMetadata",
    "fromAddresses",
]

_headers = HeaderRegistry()

#: What a user owns who is no longer in the users file.
_NOTHING = SenderRights("")

#: Looks up the rights of a user name (L{None}: the user is gone).
RightsLookup = Callable[[str], SenderRights | None]


def authMetadata(context: Any) -> dict[str, str]:
    """
    The envelope metadata of an authenticated session: C{authUser} and
    C{authMechanism}; nothing for other sessions.
    """
    user = getattr(context, "authenticatedUser", None)
    if user is None:
        return {}
    data = {"authUser": str(user)}
    mechanism = getattr(context, "authMechanism", None)
    if mechanism:
        data["authMechanism"] = str(mechanism)
    return data


def _senderText(transaction: Any) -> str:
    sender = transaction.sender
    return str(getattr(sender, "text", sender) or "")


def fromAddresses(headers: list[tuple[str, str]]) -> list[str] | None:
    """
    The addresses of every From field of C{headers}.

    @return: the addresses (C{local@domain}), or L{None} when there is no
        From field, one has no address, or one does not parse without a
        defect (the tricks that make a parser and a mail reader disagree).
    """
    values = [value for name, value in headers if name.strip().lower() == "from"]
    if not values:
        return None
    addresses = []
    for value in values:
        try:
            parsed: Any = _headers("From", value)
        except Exception:
            return None
        found = [a.addr_spec for a in parsed.addresses if a.addr_spec and a.addr_spec != "<>"]
        if parsed.defects or not found or any("@" not in a for a in found):
            return None
        addresses += found
    return addresses


class _Policy:
    """
    Every hook goes on; subclasses override some.
    """

    name = "auth"

    def __init__(self, replyType: ReplyType | None = None) -> None:
        self._replyType = replyType or AuthReply

    def _refuse(self, code: int, text: str, reason: str) -> Any:
        return self._replyType(code, text, reason=reason)

    def connect(self, context: Any) -> Any:
        return None

    def helo(self, context: Any) -> Any:
        return None

    def mail(self, context: Any, transaction: Any) -> Any:
        return None

    def rcpt(self, context: Any, transaction: Any, recipient: Any) -> Any:
        return None

    def data(self, context: Any, transaction: Any) -> Any:
        return None

    def message(self, context: Any, transaction: Any, message: Any) -> Any:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class RequireAuthPolicy(_Policy):
    """
    MAIL: C{530 5.7.0 Authentication required} before AUTH.
    """

    name = "require-auth"

    def mail(self, context: Any, transaction: Any) -> Any:
        if getattr(context, "authenticatedUser", None) is None:
            return self._refuse(530, "5.7.0 Authentication required", "auth-required")
        return None


class _RightsPolicy(_Policy):
    def __init__(self, rightsOf: RightsLookup, replyType: ReplyType | None = None) -> None:
        super().__init__(replyType)
        self._rightsOf = rightsOf

    def _rights(self, user: str) -> SenderRights:
        # A user removed since they authenticated owns nothing (but <>).
        return self._rightsOf(user) or _NOTHING


class SenderRightsPolicy(_RightsPolicy):
    """
    MAIL: an authenticated user's envelope sender must be theirs.

    @param rightsOf: the rights of a user name, as the users file gives
        them now.
    """

    name = "sender-rights"

    def mail(self, context: Any, transaction: Any) -> Any:
        user = getattr(context, "authenticatedUser", None)
        if user is None:
            return None
        sender = _senderText(transaction)
        if self._rights(user).owns(sender):
            return None
        return self._refuse(
            553,
            f"5.7.1 <{sender}>: Sender address rejected: not owned by user {user}",
            "sender",
        )


class HeaderFromPolicy(_RightsPolicy):
    """
    End of data: every address in an authenticated user's header From must
    be theirs (C{SMTP_AUTH_CHECK_FROM=true}).
    """

    name = "header-from"

    def message(self, context: Any, transaction: Any, message: Any) -> Any:
        user = getattr(context, "authenticatedUser", None)
        if user is None:
            return None
        addresses = fromAddresses(list(message.headers))
        if addresses is None:
            return self._refuse(
                550,
                "5.7.1 Message rejected: no From header field with a clear address",
                "header-from",
            )
        rights = self._rights(user)
        for address in addresses:
            if not rights.owns(address):
                return self._refuse(
                    550,
                    f"5.7.1 <{address}>: From header address rejected: not owned by user {user}",
                    "header-from",
                )
        return None
