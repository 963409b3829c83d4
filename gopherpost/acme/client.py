# -*- test-case-name: tests.test_acme_client -*-
"""
The ACME conversation (RFC 8555) through certbot's C{acme} library, which is
synchronous: everything here blocks and runs in the ACME service's own
thread, never on the reactor.

Works with Debian bookworm's python3-acme (2.1) and current PyPI releases:
only the interfaces both have are used (C{ClientV2.new_account},
C{new_order}, C{answer_challenge}, C{poll}, C{finalize_order},
C{ClientNetwork.get}); authorizations are polled here, a second at a time,
so that stopping the server interrupts a validation in progress.

Each call to L{ACMEClient.issue} fetches the directory, uses the account
kept in the store (registering one, with the operator's agreement to the
terms of service, the first time), orders a certificate for the names
with the kept certificate key, answers HTTP-01 through
L{ChallengeResponses}, and returns the issued chain.
"""

from __future__ import annotations

import datetime
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import josepy as jose
import requests
from acme import challenges, errors, messages
from acme import client as acmeclient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gopherpost import __version__
from gopherpost.acme.challenge import ChallengeResponses
from gopherpost.acme.renewal import RenewalWindow, ariCertificateID, parseRenewalInfo
from gopherpost.acme.store import ACMEStore

__all__ = [
    "ACMEError",
    "ACMECancelled",
    "ACMEClient",
    "Issued",
    "describeError",
    "makeCSR",
]

#: Seconds one HTTP request to the CA may take.
REQUEST_TIMEOUT = 20
#: Seconds an order may take from the first request to the certificate.
ORDER_DEADLINE = 120.0
#: Seconds the finalization may take (it cannot be interrupted: stopping the
#: server waits for it, within systemd's TimeoutStopSec).
FINALIZE_DEADLINE = 45.0

_USER_AGENT = f"GopherPost/{__version__} acme-python"


class ACMEError(Exception):
    """
    An order failed; C{reason} says why in one line.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class ACMECancelled(ACMEError):
    """
    The order was given up because the server is stopping.
    """

    def __init__(self) -> None:
        super().__init__("cancelled: the server is stopping")


@dataclass(frozen=True)
class Issued:
    """
    A certificate the CA issued.

    @ivar chainPEM: the chain as the CA sent it, leaf first.
    @ivar accountURI: the account that ordered it.
    @ivar notes: things worth a log line (a new account, the terms agreed).
    """

    chainPEM: bytes
    accountURI: str
    notes: tuple[str, ...] = field(default=())


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _requestProblem(error: requests.exceptions.RequestException) -> str:
    text = str(error)
    found = _ERRNO.findall(text)
    if found:
        return found[-1].strip()
    if isinstance(error, requests.exceptions.SSLError):
        return "the TLS certificate of the directory does not verify (SMTP_ACME_DIRECTORY_CA?)"
    if isinstance(error, requests.exceptions.Timeout):
        return f"no answer within {REQUEST_TIMEOUT} s"
    return text.splitlines()[0][:200] if text else type(error).__name__


def _problem(error: messages.Error) -> str:
    what = error.code or error.typ or "error"
    detail = error.detail or error.title or ""
    return f"{what}: {detail}" if detail else str(what)


def describeError(error: BaseException, directoryURL: str = "the CA") -> str:
    """
    One line saying why an ACME operation failed.
    """
    if isinstance(error, ACMEError):
        return error.reason
    if isinstance(error, messages.Error):
        return f"the CA refused: {_problem(error)}"
    if isinstance(error, errors.ValidationError):
        parts = []
        for authzr in error.failed_authzrs:
            name = authzr.body.identifier.value
            problems = [_problem(c.error) for c in authzr.body.challenges if c.error is not None]
            parts.append(f"{name} ({'; '.join(problems) or 'no reason given'})")
        return "validation failed for " + ", ".join(parts)
    if isinstance(error, errors.IssuanceError):
        return f"the CA did not issue: {_problem(error.error)}"
    if isinstance(error, errors.TimeoutError):
        return f"the CA did not finish the order within {ORDER_DEADLINE:g} s"
    if isinstance(error, requests.exceptions.RequestException):
        return f"cannot reach {directoryURL}: {_requestProblem(error)}"
    if isinstance(error, ValueError) and str(error).startswith("Requesting "):
        # The library's own rewording of a requests error: "Requesting
        # host/path: Connection refused".
        return f"cannot reach {directoryURL}: {str(error).partition(':')[2].strip()}"
    if isinstance(error, jose.DeserializationError):
        return f"the CA's answer does not parse: {error}"
    if isinstance(error, errors.Error):
        return f"ACME error: {error}"
    return f"{type(error).__name__}: {error}"


#: The exceptions an order is expected to fail with (anything else is a bug).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ACMEError,
    errors.Error,
    messages.Error,
    requests.exceptions.RequestException,
    jose.DeserializationError,
    ValueError,
)


def makeCSR(keyPEM: bytes, domains: Sequence[str]) -> bytes:
    """
    A certificate signing request (PEM) for C{domains} (the first is the
    subject's common name) signed with the key C{keyPEM}.
    """
    key = serialization.load_pem_private_key(keyPEM, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the certificate key is not an RSA key")
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def _deadline(seconds: float) -> datetime.datetime:
    # The acme library compares with the naive local datetime.now().
    return datetime.datetime.now() + datetime.timedelta(seconds=seconds)


class ACMEClient:
    """
    Orders certificates from one ACME directory.  Blocking: use from one
    thread at a time, never the reactor's.

    @param directoryURL: C{SMTP_ACME_DIRECTORY}.
    @param store: where the account is kept.
    @param responses: where HTTP-01 answers are published.
    @param email: C{SMTP_ACME_EMAIL}, the account's contact, or L{None}.
    @param caFile: CA certificates for the directory's HTTPS
        (C{SMTP_ACME_DIRECTORY_CA}); L{None} for the system's.
    @param now: the current time in seconds since the epoch (for ARI).
    """

    def __init__(
        self,
        directoryURL: str,
        store: ACMEStore,
        responses: ChallengeResponses,
        email: str | None = None,
        caFile: str | None = None,
        timeout: int = REQUEST_TIMEOUT,
        orderDeadline: float = ORDER_DEADLINE,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.directoryURL = directoryURL
        self.store = store
        self.responses = responses
        self.email = email
        self.caFile = caFile
        self.timeout = timeout
        self.orderDeadline = orderDeadline
        self._now = now or time.time

    # Connection and account

    def _network(self, key: jose.JWK, registration: Any = None) -> acmeclient.ClientNetwork:
        # verify_ssl takes what requests' verify= takes: True or a CA file.
        verify: Any = self.caFile if self.caFile else True
        return acmeclient.ClientNetwork(
            key,
            account=registration,
            user_agent=_USER_AGENT,
            verify_ssl=verify,
            timeout=self.timeout,
        )

    def _accountKey(self) -> tuple[jose.JWK, Any]:
        stored = self.store.loadAccount(self.directoryURL)
        if stored is not None:
            try:
                key = cast(jose.JWK, jose.JWK.from_json(stored["key"]))
                registration = None
                if stored["registration"] is not None:
                    registration = messages.RegistrationResource.from_json(stored["registration"])
                return key, registration
            except (jose.DeserializationError, TypeError, KeyError, ValueError):
                pass
        key = jose.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.store.saveAccount(self.directoryURL, key.to_json(), None)
        return key, None

    def _register(self, client: acmeclient.ClientV2, key: jose.JWK, notes: list[str]) -> Any:
        if self.email:
            registration = messages.NewRegistration.from_data(
                email=self.email, terms_of_service_agreed=True
            )
        else:
            registration = messages.NewRegistration.from_data(terms_of_service_agreed=True)
        try:
            regr = client.new_account(registration)
        except errors.ConflictError as e:
            # The key is registered already (a lost registration file).
            location = getattr(e, "location", None) or str(e) or None
            regr = messages.RegistrationResource(uri=location, body=registration)
            client.net.account = regr
            regr = client.query_registration(regr)
        self.store.saveAccount(self.directoryURL, key.to_json(), regr.to_json())
        terms = getattr(client.directory.meta, "terms_of_service", None)
        notes.append(
            f"registered ACME account {regr.uri} with {self.directoryURL}"
            + (
                f", agreeing (SMTP_ACME_AGREE_TOS) to its terms of service at {terms}"
                if terms
                else ""
            )
        )
        return regr

    def _connect(self, notes: list[str]) -> tuple[acmeclient.ClientV2, jose.JWK]:
        key, registration = self._accountKey()
        network = self._network(key, registration)
        directory = acmeclient.ClientV2.get_directory(self.directoryURL, network)
        client = acmeclient.ClientV2(directory, network)
        if registration is None:
            self._register(client, key, notes)
        return client, key

    # Ordering

    def issue(self, domains: Sequence[str], cancelled: threading.Event | None = None) -> Issued:
        """
        Order and fetch a certificate for C{domains}.

        @param cancelled: set by another thread to give up (between
            requests).
        @raise ACMEError: the order failed (the reason is one line);
            L{ACMECancelled} if C{cancelled} was set.
        @raise Exception: one of L{EXPECTED_ERRORS} from the library;
            L{describeError} makes it a line.
        """
        cancelled = cancelled or threading.Event()
        notes: list[str] = []
        client, key = self._connect(notes)
        csr = makeCSR(self.store.certificateKeyPEM(), domains)
        try:
            order = client.new_order(csr)
        except messages.Error as e:
            if e.code != "accountDoesNotExist":
                raise
            # The CA no longer knows the account (a test CA restarted, an
            # account deactivated): register again with the same key.
            notes.append(f"the CA no longer knows the account ({_problem(e)})")
            client.net.account = None
            self._register(client, key, notes)
            order = client.new_order(csr)
        deadline = self._now() + self.orderDeadline
        tokens: list[str] = []
        try:
            pending = []
            for authzr in order.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue
                challenge = self._http01(authzr)
                response, validation = challenge.response_and_validation(key)
                token = challenge.chall.encode("token")
                self.responses.add(token, validation)
                tokens.append(token)
                client.answer_challenge(challenge, response)
                pending.append(authzr)
            self._waitForAuthorizations(client, pending, deadline, cancelled)
            if cancelled.is_set():
                raise ACMECancelled()
            remaining = min(max(deadline - self._now(), 1.0), FINALIZE_DEADLINE)
            order = client.finalize_order(order, _deadline(remaining))
        finally:
            for token in tokens:
                self.responses.remove(token)
        chain = order.fullchain_pem
        if not chain:
            raise ACMEError("the CA sent no certificate")
        account = client.net.account
        return Issued(
            chain.encode("ascii") if isinstance(chain, str) else chain,
            str(account.uri) if account is not None else "",
            tuple(notes),
        )

    def _http01(self, authzr: Any) -> Any:
        for challenge in authzr.body.challenges:
            if isinstance(challenge.chall, challenges.HTTP01):
                return challenge
        offered = ", ".join(sorted({c.chall.typ for c in authzr.body.challenges})) or "none"
        raise ACMEError(
            f"the CA offers no HTTP-01 challenge for {authzr.body.identifier.value} "
            f"(offered: {offered})"
        )

    def _waitForAuthorizations(
        self,
        client: acmeclient.ClientV2,
        pending: list[Any],
        deadline: float,
        cancelled: threading.Event,
    ) -> None:
        while pending:
            if cancelled.is_set():
                raise ACMECancelled()
            if self._now() > deadline:
                names = ", ".join(a.body.identifier.value for a in pending)
                raise ACMEError(f"validation of {names} not done within {self.orderDeadline:g} s")
            still = []
            for authzr in pending:
                updated, _ = client.poll(authzr)
                status = updated.body.status
                if status == messages.STATUS_VALID:
                    continue
                if status in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                    still.append(updated)
                    continue
                raise errors.ValidationError([updated])
            pending = still
            if pending:
                cancelled.wait(1.0)

    # Renewal information (RFC 9773)

    def renewalWindow(self, certificate: x509.Certificate) -> RenewalWindow | None:
        """
        The CA's suggested renewal window for C{certificate}, or L{None} if
        the CA offers no renewal information.

        @raise Exception: one of L{EXPECTED_ERRORS}.
        """
        key, registration = self._accountKey()
        network = self._network(key, registration)
        directory = acmeclient.ClientV2.get_directory(self.directoryURL, network)
        try:
            base = directory["renewalInfo"]
        except KeyError:
            return None
        url = f"{str(base).rstrip('/')}/{ariCertificateID(certificate)}"
        response = network.get(url, content_type="application/json")
        return parseRenewalInfo(response.json(), _retryAfter(response.headers.get("Retry-After")))


def _retryAfter(value: str | None) -> float | None:
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    from email.utils import parsedate_to_datetime

    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return max(moment.timestamp() - datetime.datetime.now(datetime.UTC).timestamp(), 0.0)
