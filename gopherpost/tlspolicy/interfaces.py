"""
The seams of outbound transport security: what the relay's courier
(L{gopherpost.relay.courier.Courier}, given C{transportSecurity}) asks,
once per destination and once per connection.

The courier's use, for each delivery attempt to a destination domain::

    destination = yield security.forDestination(domain, port)
    for each MX host (in the courier's order), for each address:
        host = yield destination.forHost(hostname)
        if not host.allowed:          # MTA-STS enforce, DANE lookup failure
            defer its recipients with host.refusal; next host
        run the client with tlsPolicy=host.clientPolicy and
            contextFactoryFor=host.contextFactoryFor
        host.connectionEnded(firstResultOfTheConnection)   # TLS reports, metrics
        a TLS-stage failure's reply may be host.explain(result) instead

Messages flagged REQUIRETLS (RFC 8689) use C{forHost(hostname,
requireTLS=True)} and L{gopherpost.tlspolicy.requiretls}; messages with
C{TLS-Required: No} use C{forHost(hostname, relaxed=True)}.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["ITransportSecurity", "IDestinationTLS", "IHostTLSPolicy"]


class ITransportSecurity(Interface):
    """
    Decides how outbound connections are secured (DANE, MTA-STS, or
    C{SMTP_OUTBOUND_TLS}).
    """

    def forDestination(domain: str, port: int) -> object:
        """
        The policy for one delivery attempt to C{domain}.

        @param domain: the recipient domain (lower case, A-labels), or the
            destination key of a smarthost.
        @param port: the port the courier connects to (TLSA records are
            looked up for it).
        @return: a Deferred that always fires with an L{IDestinationTLS}.
        """


class IDestinationTLS(Interface):
    """
    One destination's policy during one delivery attempt.
    """

    domain = Attribute("The destination domain.")
    stsMode = Attribute("The MTA-STS mode that applies (enforce, testing), or None.")
    mxSecure = Attribute("Whether the MX records were DNSSEC-validated.")

    def forHost(hostname: str, requireTLS: bool = False, relaxed: bool = False) -> object:
        """
        The policy for one connection to the MX host C{hostname}.

        @param requireTLS: for a REQUIRETLS message: MTA-STS C{testing}
            counts as C{enforce} (RFC 8689 4.2.1).
        @param relaxed: for a message with C{TLS-Required: No} (RFC 8689 5):
            DANE and MTA-STS are ignored, STARTTLS is used when offered,
            certificates are not checked.
        @return: a Deferred that always fires with an L{IHostTLSPolicy}.
        """


class IHostTLSPolicy(Interface):
    """
    The decision for one outbound connection: which host, whether TLS is
    required, how the certificate is checked, and what to record.
    """

    hostname = Attribute("The MX host name.")
    label = Attribute(
        "The policy that applies: dane, mta-sts, verify, may or none (the delivery log's tls=)."
    )
    allowed = Attribute("Whether the host may be used at all.")
    refusal = Attribute("Why not, as a reply line ('4.7.5 ...'), when not allowed.")
    clientPolicy = Attribute(
        "The SMTP client's TLS policy for the connection: none, may, verify or require."
    )
    tlsRequired = Attribute("Whether the connection must use TLS (never cleartext).")
    verifiedForRequireTLS = Attribute(
        "Whether the host's certificate is checked by DANE or MTA-STS (REQUIRETLS may use it)."
    )

    def contextFactoryFor(policy: str, hostname: str) -> object:
        """
        The connection creator for STARTTLS (the SMTP client's
        C{contextFactoryFor}); a fresh one per call.
        """

    def connectionEnded(result: object) -> object:
        """
        The connection is over; C{result} is its first message's
        L{gopherpost.relay.outcome.DeliveryResult}.  Records the session
        for TLS reports and metrics (once: later calls do nothing).

        @return: the L{gopherpost.tlspolicy.policy.TLSFacts} of the
            connection, or L{None} when it never reached TLS negotiation.
        """

    def explain(result: object) -> object:
        """
        A clearer reply line for a connection that failed for TLS reasons
        (e.g. "mx does not offer STARTTLS, which DANE requires"), or L{None}
        to keep the client's.
        """
