# -*- test-case-name: tests.test_policies -*-
"""
Today's checks as policies on the chain (L{gopherpost.inbound.policy}), and
the chain each listener role gets (L{policiesFor}).

  - L{AllowListPolicy} (connect): who may connect at all, through the
    twisted.cred portal of L{gopherpost.inbound.access}.
  - L{RelayPermissionPolicy} (connect, RCPT): who may send to non-local
    domains; others get C{554 5.7.1 <address>: Relay access denied}.
  - L{RequireTLSPolicy} (MAIL; the submission role): C{530 5.7.0} until
    STARTTLS.
  - L{MessageSizePolicy} (MAIL): a declared C{SIZE=} over the limit.
  - L{LocalSenderPolicy} (MAIL; C{SMTP_REQUIRE_LOCAL_DOMAIN}): a client
    that may relay sends as us, so its sender must be local; a client that
    may not relay delivers to us, and its sender may be anyone, as an MX
    must accept.  For an authenticated user the sender rights decide
    instead (L{gopherpost.auth.policies.SenderRightsPolicy}).
  - L{RecipientLimitPolicy} (RCPT): C{SMTP_MAX_RECIPIENTS}.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gopherpost.config import Settings
from gopherpost.inbound.access import IClientIdentity, PeerAddress, unmapAddress, unmapNetwork
from gopherpost.inbound.context import EnvelopeRecipient, SessionContext, Transaction
from gopherpost.inbound.policy import Policy, PolicyChain
from gopherpost.inbound.replies import Reply
from gopherpost.inbound.roles import ListenerRole

__all__ = [
    "AllowListPolicy",
    "RelayPermissionPolicy",
    "RequireTLSPolicy",
    "MessageSizePolicy",
    "LocalSenderPolicy",
    "RecipientLimitPolicy",
    "policiesFor",
    "chainFor",
]

_log = Logger()

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AllowListPolicy(Policy):
    """
    Connect: log in to the portal with the client's address; a client the
    portal refuses gets C{554 5.7.1 Access denied}.  The avatar becomes
    C{context.identity}.
    """

    name = "allow-list"

    def __init__(self, portal: Portal) -> None:
        self._portal = portal

    def connect(self, context: SessionContext) -> Deferred:
        d = self._portal.login(
            PeerAddress(context.clientAddress, context.clientPort), None, IClientIdentity
        )

        def admitted(result: tuple[Any, Any, Callable[[], None]]) -> None:
            _, identity, _ = result
            context.identity = identity
            return None

        def refused(failure: Failure) -> Reply:
            if failure.check(UnauthorizedLogin):
                why = failure.getErrorMessage()
            else:
                _log.failure(
                    "Access check for {client} failed", failure, client=context.clientAddress
                )
                why = "access check failed"
            _log.info(
                "Rejected connection from {client}: access denied ({why})",
                client=context.clientAddress,
                why=why,
            )
            return Reply(554, "5.7.1 Access denied", reason="access")

        return d.addCallbacks(admitted, refused)


class RelayPermissionPolicy(Policy):
    """
    Connect: decide whether the client's address may relay
    (C{context.relayClient}).  RCPT: a recipient outside our local domains
    needs C{context.mayRelay} (a relay client, or later an authenticated
    user); without it, C{554 5.7.1 <address>: Relay access denied}.

    @param relayNetworks: the networks whose clients may relay, or L{None}:
        every admitted client may (C{SMTP_RELAY_NETWORKS} unset).
    @param isLocalDomain: whether a domain is one of ours.
    """

    name = "relay-permission"

    def __init__(
        self,
        relayNetworks: Sequence[IPNetwork] | None,
        isLocalDomain: Callable[[str], bool],
    ) -> None:
        self._networks = (
            None if relayNetworks is None else tuple(unmapNetwork(n) for n in relayNetworks)
        )
        self._isLocalDomain = isLocalDomain

    def mayRelay(self, address: str) -> bool:
        """
        Whether a client at C{address} may relay by its address.
        """
        if self._networks is None:
            return True
        try:
            ip = unmapAddress(address)
        except ValueError:
            return False
        return any(ip.version == n.version and ip in n for n in self._networks)

    def connect(self, context: SessionContext) -> None:
        context.relayClient = self.mayRelay(context.clientAddress)
        return None

    def rcpt(
        self, context: SessionContext, transaction: Transaction, recipient: EnvelopeRecipient
    ) -> Reply | None:
        if context.mayRelay or self._isLocalDomain(recipient.mailbox.domain):
            return None
        return Reply(554, f"5.7.1 <{recipient.address}>: Relay access denied", reason="relay")


class RequireTLSPolicy(Policy):
    """
    MAIL: the session must be encrypted first (RFC 6409 submission with
    STARTTLS required): C{530 5.7.0 Must issue a STARTTLS command first}.
    """

    name = "require-tls"

    def mail(self, context: SessionContext, transaction: Transaction) -> Reply | None:
        if context.tls is None:
            return Reply(530, "5.7.0 Must issue a STARTTLS command first", reason="tls-required")
        return None


class MessageSizePolicy(Policy):
    """
    MAIL: a declared C{SIZE=} over the limit gets C{552 5.3.4}.  (The
    session enforces the same limit on what actually arrives.)
    """

    name = "message-size"

    def __init__(self, maxMessageSize: int) -> None:
        self.maxMessageSize = maxMessageSize

    def mail(self, context: SessionContext, transaction: Transaction) -> Reply | None:
        if transaction.declaredSize > self.maxMessageSize:
            return Reply(552, "5.3.4 Message size exceeds fixed limit", reason="size")
        return None


class LocalSenderPolicy(Policy):
    """
    MAIL: a client that may relay must use a sender in a local domain
    (C{553 5.7.1}); the null sender is always accepted, and clients that
    may not relay may use any sender.
    """

    name = "local-sender"

    def __init__(self, isLocalDomain: Callable[[str], bool]) -> None:
        self._isLocalDomain = isLocalDomain

    def mail(self, context: SessionContext, transaction: Transaction) -> Reply | None:
        sender = transaction.sender
        if (
            sender.isNull
            or not context.mayRelay
            or context.authenticatedUser is not None
            or self._isLocalDomain(sender.domain)
        ):
            return None
        return Reply(
            553,
            f"5.7.1 <{sender.text}>: Sender address rejected: domain is not local to this server",
            reason="sender",
        )


class RecipientLimitPolicy(Policy):
    """
    RCPT: at most C{maxRecipients} per transaction; more get C{452 4.5.3}
    (the client may send them in another transaction).
    """

    name = "recipient-limit"

    def __init__(self, maxRecipients: int) -> None:
        self.maxRecipients = maxRecipients

    def rcpt(
        self, context: SessionContext, transaction: Transaction, recipient: EnvelopeRecipient
    ) -> Reply | None:
        if len(transaction.recipients) >= self.maxRecipients:
            return Reply(452, "4.5.3 Error: too many recipients", reason="recipients")
        return None


def policiesFor(
    role: ListenerRole, settings: Settings, portal: Portal, auth: Any = None
) -> list[Any]:
    """
    The policies of a listener role, in chain order.

    Connect: allow-list, then relay permission.  MAIL: TLS (submission),
    AUTH (submission, with C{auth}), size, local sender, sender rights.
    RCPT: recipient limit, then relay permission.  End of data: the header
    From (C{SMTP_AUTH_CHECK_FROM}).

    @param auth: the L{gopherpost.auth.service.AuthService}, or L{None}.
    """
    placed = auth.policiesFor(role) if auth is not None else {}
    policies: list[Any] = [AllowListPolicy(portal)]
    if role.requireTLS:
        policies.append(RequireTLSPolicy())
    policies += placed.get("afterTLS", [])
    policies.append(MessageSizePolicy(settings.maxMessageSize))
    if settings.requireLocalDomain:
        policies.append(LocalSenderPolicy(settings.isLocalDomain))
    policies += placed.get("mail", [])
    policies.append(RecipientLimitPolicy(settings.maxRecipients))
    policies.append(RelayPermissionPolicy(settings.relayNetworks, settings.isLocalDomain))
    policies += placed.get("message", [])
    return policies


def chainFor(
    role: ListenerRole, settings: Settings, portal: Portal, auth: Any = None
) -> PolicyChain:
    """
    The policy chain of a listener role (see L{policiesFor}).
    """
    return PolicyChain(policiesFor(role, settings, portal, auth))
