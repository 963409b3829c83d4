# -*- test-case-name: tests.test_config -*-
"""
GopherPost's configuration: C{SMTP_*} environment variables (and a C{.env}
file) turned into one frozen, validated L{Settings} object.

Every variable is parsed strictly.  A bad value raises L{ConfigError}, whose
string form is one line naming the variable and the problem; L{gopherpost.tap}
turns it into a start-up failure before anything is bound.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from gopherpost.listeners.endpoints import (
    EndpointError,
    ListenerSpec,
    parseEndpoint,
    parseListeners,
)

__all__ = [
    "ConfigError",
    "Settings",
    "IPNetwork",
    "HostPort",
    "OUTBOUND_TLS_POLICIES",
    "LETS_ENCRYPT_DIRECTORY",
    "LETS_ENCRYPT_STAGING_DIRECTORY",
    "loadEnvironment",
    "settingsFromEnvironment",
    "parseHostPort",
    "healthAddress",
    "FILTER_FAILURE_ACTIONS",
    "FILTER_SCOPES",
    "MilterSpec",
    "SpamdAddress",
    "parseMilters",
    "parseRspamdURL",
    "parseSpamdAddress",
    "openRelayProblem",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
HostPort = tuple[str, int]

#: Let's Encrypt's production ACME directory, C{SMTP_ACME_DIRECTORY}'s default.
LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
#: Let's Encrypt's staging directory: for trials, its certificates are not trusted.
LETS_ENCRYPT_STAGING_DIRECTORY = "https://acme-staging-v02.api.letsencrypt.org/directory"

#: C{SMTP_ACME_CHALLENGE_LISTEN}'s default: HTTP-01 is checked on port 80.
ACME_CHALLENGE_LISTEN = parseEndpoint("SMTP_ACME_CHALLENGE_LISTEN", "tcp:80")

#: The accepted values of C{SMTP_OUTBOUND_TLS}.
OUTBOUND_TLS_POLICIES = ("verify", "may", "require", "none")

_T = TypeVar("_T")
_D = TypeVar("_D")


#: The values of C{SMTP_FILTER_FAIL}; a milter's C{default=} may also say
#: C{reject}.
FILTER_FAILURE_ACTIONS = ("tempfail", "accept")

#: The values of C{SMTP_RSPAMD_SCOPE}, C{SMTP_SPAMD_SCOPE} and a milter's
#: C{scope=}.
FILTER_SCOPES = ("inbound", "all")


class ConfigError(ValueError):
    """
    A configuration variable has an invalid value.

    @ivar variable: the name of the variable, e.g. C{"SMTP_PORT"}.
    @ivar problem: what is wrong with it, one line.
    """

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(variable, problem)
        self.variable = variable
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.variable}: {self.problem}"


@dataclass(frozen=True)
class MilterSpec:
    """
    One entry of C{SMTP_MILTERS}.

    @ivar address: as given, e.g. C{inet:127.0.0.1:8891} (for logs).
    @ivar host: the TCP host (C{inet:}/C{inet6:}), or C{""}.
    @ivar port: the TCP port, or 0.
    @ivar path: the socket path (C{unix:}/C{local:}), or C{""}.
    @ivar name: the milter's name in logs and metrics (C{name=}, default
        C{milter:} and the address).
    @ivar timeout: seconds each stage's exchange may take (C{timeout=}).
    @ivar default: what a failure of this milter means (C{default=}:
        C{tempfail}, C{accept} or C{reject}); L{None}: C{SMTP_FILTER_FAIL}.
    @ivar scope: C{all} (every client, the default) or C{inbound} (not for
        clients that may relay or authenticated).
    """

    address: str
    host: str = ""
    port: int = 0
    path: str = ""
    name: str = ""
    timeout: float = 30.0
    default: str | None = None
    scope: str = "all"


@dataclass(frozen=True)
class SpamdAddress:
    """
    Where spamd listens (C{SMTP_SPAMD}): C{host:port} or C{unix:/path}.
    """

    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """
    The validated configuration of one GopherPost server.

    Field names follow the variables: C{SMTP_MAX_MESSAGE_SIZE} is
    C{maxMessageSize}.  Durations are in seconds.
    """

    # Core runtime
    port: int = 2525
    listenAddress: str = ""
    hostname: str = "localhost"
    banner: str = "GopherPost ready"
    debug: bool = False
    healthAddr: str = ":8080"
    healthPort: int | None = None
    healthDisable: bool = False
    queuePath: str = "./data/spool"

    # Listeners (SMTP_LISTEN, SMTP_SUBMISSION_LISTEN, SMTP_SUBMISSIONS_LISTEN;
    # see gopherpost.listeners.endpoints)
    #: The relay/MX listeners; L{None} (unset): one on C{SMTP_LISTEN_ADDR}
    #: and C{SMTP_PORT}, as before the setting existed; C{()}: none
    #: (C{SMTP_LISTEN=none}).
    listen: tuple[ListenerSpec, ...] | None = None
    #: RFC 6409 submission listeners (STARTTLS before MAIL); none by default.
    submissionListen: tuple[ListenerSpec, ...] = ()
    #: RFC 8314 implicit-TLS submission listeners; none by default.
    submissionsListen: tuple[ListenerSpec, ...] = ()

    # Access control and policy
    allowNetworks: tuple[IPNetwork, ...] = ()
    allowHosts: tuple[str, ...] = ()
    requireLocalDomain: bool = True
    localDomains: tuple[str, ...] = ("localhost",)
    #: C{SMTP_RELAY_NETWORKS}; L{None} (unset): every client the allow-list
    #: admits may relay, by network or by host name (the behaviour before
    #: the setting existed).  See L{effectiveRelayNetworks}.
    relayNetworks: tuple[IPNetwork, ...] | None = None

    # Limits
    maxMessageSize: int = 10485760
    maxRecipients: int = 100
    commandTimeout: float = 300.0
    maxConnections: int = 1000
    maxConnectionsPerIP: int = 50
    workers: int = 1

    # TLS (inbound)
    tlsDisable: bool = False
    tlsCert: str | None = None
    tlsKey: str | None = None

    # DNS
    dnsServers: tuple[HostPort, ...] = ()

    # Outbound relay
    relayHost: HostPort | None = None
    outboundPort: int = 25
    outboundTLS: str = "verify"
    outboundTimeoutScale: float = 1.0
    retryInitial: float = 60.0
    retryMax: float = 3840.0
    queueLifetime: float = 432000.0
    queueWorkers: int = 16
    destinationConcurrency: int = 4

    # DKIM
    dkimSelector: str | None = None
    dkimKeyPath: str | None = None
    dkimPrivateKey: str | None = None
    dkimDomain: str | None = None

    # Inbound DATA deadline (Postfix's smtpd_min_data_rate): octets per
    # second of message content that earn their time back; 0: idle timer
    # only.
    minDataRate: int = 500
    # Internet MX checks (issue 16): sender authentication, abuse, shared state
    #: C{SMTP_SENDER_AUTH}: check SPF, DKIM, ARC and DMARC for mail from
    #: clients without relay permission and add Authentication-Results.
    senderAuth: bool = True
    #: C{SMTP_SPF_REJECT}: C{never} (record only) or C{fail} (550 5.7.23).
    spfReject: str = "never"
    dmarcEnforce: bool = True
    arcTrustedSealers: tuple[str, ...] = ()
    dnsblZones: tuple[str, ...] = ()
    #: Per client (IPv4 address, IPv6 /64) per minute; 0 is off.  Only
    #: connections are limited by default, generously (see the README's
    #: "Running as an internet MX"); messages and recipients are off, as
    #: Postfix's anvil limits are.
    rateConnections: int = 600
    rateMessages: int = 0
    rateRecipients: int = 0
    #: Per authenticated user per hour; 0 is off.
    rateUserMessages: int = 500
    greylist: bool = False
    greylistDelay: float = 300.0
    greylistAutoWhitelist: int = 5
    #: Violations within L{banWindow} that ban a client; 0 is off.
    banThreshold: int = 10
    banWindow: float = 600.0
    banDuration: float = 600.0
    banMaxDuration: float = 86400.0
    redisURL: str | None = None
    redisPrefix: str = "gopherpost:"
    # Webhooks (issue 18): inbound mail and delivery events as signed JSON.
    #: C{SMTP_WEBHOOK_URL}: where inbound mail is posted (L{None}: off).
    webhookURL: str | None = None
    #: C{SMTP_WEBHOOK_SECRET}: C{whsec_<base64>}, Standard Webhooks signing.
    webhookSecret: str | None = None
    #: C{SMTP_WEBHOOK_SCOPE}: C{"local"} (messages with a local recipient)
    #: or C{"all"}.
    webhookScope: str = "local"
    webhookMaxInline: int = 1048576
    webhookRaw: bool = False
    webhookTimeout: float = 15.0
    webhookRetryInitial: float = 10.0
    webhookRetryMax: float = 3600.0
    webhookLifetime: float = 259200.0
    #: C{SMTP_WEBHOOK_CONCURRENCY}: requests in flight to each webhook URL.
    webhookConcurrency: int = 4
    #: C{SMTP_EVENTS_WEBHOOK_URL}: where delivery events are posted.
    eventsWebhookURL: str | None = None
    #: C{SMTP_EVENTS_WEBHOOK_SECRET}; L{None}: C{SMTP_WEBHOOK_SECRET}.
    eventsWebhookSecret: str | None = None

    # Content filters (issue 21: rspamd, SpamAssassin, milters)
    #: C{SMTP_RSPAMD_URL}: rspamd's normal worker, e.g.
    #: C{http://127.0.0.1:11333}; L{None}: no rspamd.
    rspamdURL: str | None = None
    #: C{SMTP_RSPAMD_SCOPE}: C{inbound} (skip clients that may relay or
    #: authenticated) or C{all}.
    rspamdScope: str = "inbound"
    rspamdTimeout: float = 20.0
    #: C{SMTP_FILTER_FAIL}: what a filter that is down or too slow means:
    #: C{tempfail} (451 4.7.1) or C{accept} (logged, counted, accepted).
    filterFail: str = "tempfail"
    #: C{SMTP_SPAMD}: SpamAssassin's spamd; L{None}: no SpamAssassin.
    spamd: SpamdAddress | None = None
    spamdScope: str = "inbound"
    spamdTimeout: float = 20.0
    #: C{SMTP_SPAMD_MAX_SIZE}: larger messages are not given to spamd (as
    #: spamc's C{--max-size}).
    spamdMaxSize: int = 512000
    #: C{SMTP_SPAM_REJECT_SCORE}: a SpamAssassin score at or above it is
    #: refused (550 5.7.1); L{None} (C{none}): never refused for its score.
    spamRejectScore: float | None = 10.0
    #: C{SMTP_MILTERS}, in order.
    milters: tuple[MilterSpec, ...] = ()
    # Web UI, message index and capture mode (issue 17; gopherpost.webui,
    # gopherpost.index).  Parsed in one block by _webSettings.
    #: C{SMTP_WEB_LISTEN}: a Twisted server endpoint string; C{""}: off.
    webListen: str = ""
    #: C{SMTP_WEB_AUTH}: C{(user, scrypt hash)}; L{None}: no authentication.
    webAuth: tuple[str, str] | None = None
    #: C{SMTP_CAPTURE}: the development role: keep and index everything,
    #: relay nothing.
    capture: bool = False
    #: C{SMTP_CAPTURE_MAX_MESSAGES}: messages kept in capture mode (the
    #: newest); C{0}: no limit.
    captureMaxMessages: int = 500
    #: C{SMTP_INDEX_RELAYED}: index messages without a local recipient too.
    indexRelayed: bool = False
    #: C{SMTP_RELEASE_TO}: address patterns the API may release messages to.
    releaseTo: tuple[str, ...] = ()

    # ACME (issue 22): certificates from an ACME CA (Let's Encrypt)
    #: C{SMTP_ACME_DOMAINS}: the certificate's names, the first is its
    #: subject; empty turns ACME off.
    acmeDomains: tuple[str, ...] = ()
    #: C{SMTP_ACME_EMAIL}: the account's contact address.
    acmeEmail: str | None = None
    #: C{SMTP_ACME_DIRECTORY}: the CA's directory URL.
    acmeDirectory: str = LETS_ENCRYPT_DIRECTORY
    #: C{SMTP_ACME_AGREE_TOS}: the operator agrees to the CA's terms.
    acmeAgreeTOS: bool = False
    #: C{SMTP_ACME_CHALLENGE_LISTEN}: the endpoint answering HTTP-01.
    acmeChallengeListen: ListenerSpec = ACME_CHALLENGE_LISTEN
    #: C{SMTP_ACME_DIRECTORY_CA}: CA certificates (PEM) to trust for the
    #: directory's HTTPS instead of the system's (a private CA).
    acmeDirectoryCA: str | None = None

    # Authenticated submission (issue 15; gopherpost.auth).  Parsed in one
    # block by _authSettings.
    #: C{SMTP_USERS_FILE}; L{None}: C{<SMTP_QUEUE_PATH>/.gopherpost/users}
    #: (see L{gopherpost.auth.service.usersFilePath}).
    usersFile: str | None = None
    #: C{SMTP_AUTH_ON_SMTP}: offer AUTH on C{SMTP_LISTEN} too (after
    #: STARTTLS).
    authOnSMTP: bool = False
    #: C{SMTP_AUTH_MAX_FAILURES}: failed AUTH commands in one session
    #: before C{421 4.7.0} and the close.
    authMaxFailures: int = 3
    #: C{SMTP_AUTH_CHECK_FROM}: the header From of an authenticated user's
    #: message must be theirs too (C{550 5.7.1}).
    authCheckFrom: bool = False
    #: C{SMTP_AUTH_LOCKOUT_FAILURES}: failures from one client network
    #: (IPv4 address, IPv6 /64) within the window that lock it out; 0: off.
    authLockoutFailures: int = 5
    #: C{SMTP_AUTH_USER_LOCKOUT_FAILURES}: failures for one user name within
    #: the window that lock the user out; 0: off.
    authUserLockoutFailures: int = 10
    #: C{SMTP_AUTH_LOCKOUT_WINDOW}: seconds failures are counted over.
    authLockoutWindow: float = 600.0
    #: C{SMTP_AUTH_LOCKOUT_DURATION}: seconds of a first lockout.
    authLockoutDuration: float = 600.0
    #: C{SMTP_AUTH_LOCKOUT_MAX_DURATION}: the longest lockout (each repeat
    #: doubles the one before).
    authLockoutMaxDuration: float = 86400.0
    # Outbound transport security (issue 19): MTA-STS, DANE, TLS reports
    #: C{SMTP_MTA_STS}: apply the MTA-STS policies of destination domains.
    mtaSts: bool = True
    #: C{SMTP_MTA_STS_PORT}: the HTTPS port policies are fetched from (443
    #: but in tests).
    mtaStsPort: int = 443
    #: C{SMTP_DANE}: apply DANE (DNSSEC-validated TLSA records, trusting
    #: the AD bit of C{SMTP_DNS_SERVERS}).
    dane: bool = True
    #: C{SMTP_TLSRPT}: send daily TLS reports (RFC 8460).
    tlsrpt: bool = False

    @property
    def acmeEnabled(self) -> bool:
        """
        Whether certificates come from ACME (C{SMTP_ACME_DOMAINS} is set).
        """
        return bool(self.acmeDomains)

    # Operations (issue 14): spool retention (gopherpost.retention)
    #: C{SMTP_KEEP_DELIVERED}: seconds a message whose recipients are all
    #: final and remote stays in the spool (0: removed at once).
    keepDelivered: float = 0.0
    #: C{SMTP_RETENTION_DAYS}: local messages older than this many days are
    #: removed (0: kept for ever).
    retentionDays: int = 0
    #: C{SMTP_RETENTION_MAX_MESSAGES}: the oldest local messages beyond this
    #: many are removed (0: no limit).
    retentionMaxMessages: int = 0

    # ESMTP (issue 19): DSNs the sender asked for (NOTIFY=DELAY)
    #: C{SMTP_DELAY_WARNING}: seconds a recipient may wait in the queue
    #: before a sender who asked (NOTIFY=DELAY) is told once (0: never).
    delayWarning: float = 14400.0

    @property
    def dkimEnabled(self) -> bool:
        """
        Whether any C{SMTP_DKIM_*} variable was set, which turns signing on.
        """
        return any(
            v is not None
            for v in (
                self.dkimSelector,
                self.dkimKeyPath,
                self.dkimPrivateKey,
                self.dkimDomain,
            )
        )

    @property
    def tlsEnabled(self) -> bool:
        """
        Whether inbound STARTTLS is offered.
        """
        return not self.tlsDisable

    @property
    def effectiveRelayNetworks(self) -> tuple[IPNetwork, ...]:
        """
        The networks whose clients may relay: C{SMTP_RELAY_NETWORKS}, or by
        default the allow-list's networks.
        """
        if self.relayNetworks is None:
            return self.allowNetworks
        return self.relayNetworks

    def isLocalDomain(self, domain: str) -> bool:
        """
        Whether C{domain} (any case, an optional trailing dot) is one of ours.
        An internationalised name (SMTPUTF8) matches by its A-labels.
        """
        key = domain.rstrip(".").lower()
        if key in self.localDomains:
            return True
        if key.isascii():
            return False
        # esmtp: IDNA 2008 (U-labels in an SMTPUTF8 address).
        from gopherpost.esmtp.idn import domainKey

        return domainKey(key) in self.localDomains


def loadEnvironment(environ: Mapping[str, str] | None = None, dotenvPath: str = ".env") -> dict:
    """
    Merge a C{.env} file under the real environment.

    A variable set in C{environ} wins over the file, even when it is set to
    the empty string.

    @param environ: the real environment (default C{os.environ}).
    @param dotenvPath: the C{.env} file to read if it exists.
    @return: a new mapping of every variable.
    """
    if environ is None:
        environ = os.environ
    merged: dict = {}
    if os.path.isfile(dotenvPath):
        from dotenv import dotenv_values

        for key, value in dotenv_values(dotenvPath).items():
            if value is not None:
                merged[key] = value
    merged.update(environ)
    return merged


# Parsers: each takes the variable's name and raw value.


def _bool(name: str, raw: str) -> bool:
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise ConfigError(name, f"{raw!r} is not a boolean (use true or false)")


def _int(name: str, raw: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not a whole number") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(name, f"{value} is out of range ({bound})")
    return value


def _port(name: str, raw: str) -> int:
    try:
        return _int(name, raw, 1, 65535)
    except ConfigError:
        raise ConfigError(name, f"{raw!r} is not a valid TCP port (1-65535)") from None


def _seconds(name: str, raw: str, minimum: float = 0.0) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not a number of seconds") from None
    if not value == value or value in (float("inf"), float("-inf")):
        raise ConfigError(name, f"{raw!r} is not a number of seconds")
    if value < minimum:
        raise ConfigError(name, f"{raw!r} must be at least {minimum:g} seconds")
    return value


_SIZE_SUFFIXES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _size(name: str, raw: str) -> int:
    text = raw.strip().lower()
    if text.endswith("b"):
        text = text[:-1]
    suffix = text[-1:] if text[-1:] in ("k", "m", "g") else ""
    number = text[: len(text) - len(suffix)]
    if not number.isdigit():
        raise ConfigError(name, f"{raw!r} is not a size in bytes (e.g. 10485760, 512K, 10M)")
    value = int(number) * _SIZE_SUFFIXES[suffix]
    if value < 1:
        raise ConfigError(name, f"{raw!r} must be at least 1 byte")
    return value


def _list(raw: str) -> list:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _networks(name: str, raw: str) -> tuple[IPNetwork, ...]:
    networks = []
    for item in _list(raw):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(name, f"{item!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _hostname(name: str, raw: str) -> str:
    text = raw.strip().rstrip(".")
    labels = text.split(".")
    if (
        not text
        or len(text) > 253
        or any(
            not label
            or len(label) > 63
            or label.startswith("-")
            or label.endswith("-")
            or not all(c.isalnum() or c in "-_" for c in label)
            for label in labels
        )
    ):
        raise ConfigError(name, f"{raw!r} is not a valid host name")
    return text.lower()


def _hosts(name: str, raw: str) -> tuple[str, ...]:
    hosts = []
    for item in _list(raw):
        try:
            hosts.append(str(ipaddress.ip_address(item)))
            continue
        except ValueError:
            pass
        hosts.append(_hostname(name, item))
    return tuple(hosts)


def _domains(name: str, raw: str) -> tuple[str, ...]:
    return tuple(_hostname(name, item) for item in _list(raw))


def parseHostPort(name: str, raw: str, defaultPort: int | None) -> HostPort:
    """
    Parse C{host}, C{host:port}, C{v4:port}, C{[v6]} or C{[v6]:port}.

    A bare IPv6 literal without brackets is accepted too (then no port).

    @param name: the variable's name, for errors.
    @param defaultPort: the port when none is given; L{None} makes the port
        mandatory.
    @raise ConfigError: on anything else.
    """
    text = raw.strip()
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(name, f"{raw!r}: missing ']' after IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(name, f"{raw!r} is not host, host:port or [v6]:port")
            port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(name, f"{host!r} is not an IPv6 address") from None
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ConfigError(name, f"{raw!r} is not host, host:port or [v6]:port") from None
    if not host:
        raise ConfigError(name, f"{raw!r} has no host")
    if not (host.startswith("[") or ":" in host):
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            host = _hostname(name, host)
    if port is None:
        if defaultPort is None:
            raise ConfigError(name, f"{raw!r} has no port")
        return (host, defaultPort)
    return (host, _port(name, port))


def _dnsServers(name: str, raw: str) -> tuple[HostPort, ...]:
    servers = []
    for item in _list(raw):
        host, port = parseHostPort(name, item, 53)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(
                name, f"{item!r}: a resolver must be an IP address, not a name"
            ) from None
        servers.append((host, port))
    return tuple(servers)


def _readableFile(name: str, raw: str) -> str:
    path = raw.strip()
    if not os.path.isfile(path):
        raise ConfigError(name, f"file {path!r} does not exist")
    if not os.access(path, os.R_OK):
        raise ConfigError(name, f"file {path!r} is not readable")
    return path


def _choice(name: str, raw: str, choices: Sequence[str]) -> str:
    if raw not in choices:
        raise ConfigError(name, f"{raw!r} is not one of {', '.join(choices)}")
    return raw


def _text(name: str, raw: str) -> str:
    if "\r" in raw or "\n" in raw:
        raise ConfigError(name, "must be a single line")
    return raw


def healthAddress(settings: Settings) -> HostPort:
    """
    The (host, port) the HTTP server listens on: C{SMTP_HEALTH_ADDR}
    (C{host:port}, C{:port} or C{[v6]:port}) with its port replaced by
    C{SMTP_HEALTH_PORT} when that is set, which also makes the port in
    C{SMTP_HEALTH_ADDR} optional.

    An empty host means every interface.

    @raise ConfigError: C{SMTP_HEALTH_ADDR} does not parse, e.g. has no
        port (C{nonsense}).
    """
    addr = settings.healthAddr.strip()
    if addr.startswith(":") and not addr.startswith("::"):
        host, port = "", _port("SMTP_HEALTH_ADDR", addr[1:])
    else:
        try:
            host, port = parseHostPort("SMTP_HEALTH_ADDR", addr, settings.healthPort)
        except ConfigError as e:
            if settings.healthPort is None and e.problem.endswith("has no port"):
                raise ConfigError(
                    "SMTP_HEALTH_ADDR",
                    f"{addr!r} has no port (use host:port, :port or [v6]:port)",
                ) from None
            raise
    if settings.healthPort is not None:
        port = settings.healthPort
    return (host, port)


def _covers(networks: Sequence[IPNetwork], everything: IPNetwork) -> bool:
    """
    Whether C{networks} together cover all of C{everything}.
    """
    same: list[Any] = [n for n in networks if n.version == everything.version]
    return everything in ipaddress.collapse_addresses(same)


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _asIPv4(network: IPNetwork) -> IPNetwork:
    """
    An IPv4-mapped IPv6 network as the IPv4 network it is (clients reach
    the allow-list and relay checks unmapped); anything else as it is.
    """
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        first = network.network_address.ipv4_mapped
        return ipaddress.IPv4Network(f"{first}/{network.prefixlen - 96}")
    return network


def openRelayProblem(settings: Settings) -> str | None:
    """
    Why the relay networks make an open relay, or L{None} if they do not.

    They do when C{settings.effectiveRelayNetworks} (C{SMTP_RELAY_NETWORKS},
    or by default the allow-list) cover every IPv4 or every IPv6 address,
    alone (C{0.0.0.0/0}, C{::/0}, C{::ffff:0:0/96}) or together (e.g.
    C{0.0.0.0/1,128.0.0.0/1}).
    """
    networks = [_asIPv4(n) for n in settings.effectiveRelayNetworks]
    ipv4 = _covers(networks, ipaddress.IPv4Network("0.0.0.0/0"))
    ipv6 = _covers(networks, ipaddress.IPv6Network("::/0"))
    if not (ipv4 or ipv6):
        return None
    which = (
        "every IPv4 and IPv6 address"
        if ipv4 and ipv6
        else ("every IPv4 address" if ipv4 else "every IPv6 address")
    )
    listed = ",".join(str(n) for n in settings.effectiveRelayNetworks)
    if settings.relayNetworks is None:
        return (
            f"unset, so every client SMTP_ALLOW_NETWORKS admits may relay, and {listed} is "
            f"{which}: an open relay; set SMTP_RELAY_NETWORKS to the networks that may send "
            "to other domains (e.g. 127.0.0.1/32,::1/128), and other clients may then send "
            "only to local domains"
        )
    return (
        f"{listed} covers {which}: an open relay; list only the networks that may send "
        "to other domains (e.g. 127.0.0.1/32,::1/128)"
    )


def settingsFromEnvironment(
    environ: Mapping[str, str] | None = None,
    checkFiles: bool = True,
    defaultHostname: Callable[[], str] | None = None,
) -> Settings:
    """
    Build validated L{Settings} from environment variables.

    Unset variables take their defaults; a variable set to the empty string
    counts as unset, except where the empty value means something.

    @param environ: the variables (default: the real environment merged
        with C{.env}, see L{loadEnvironment}).
    @param checkFiles: check that TLS and DKIM files exist.
    @param defaultHostname: returns the host name when C{SMTP_HOSTNAME} is
        unset (default L{socket.gethostname}).
    @raise ConfigError: for the first invalid variable.
    """
    env = loadEnvironment() if environ is None else dict(environ)

    def get(name: str, parse: Callable[[str, str], _T], default: _D) -> _T | _D:
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            return default
        return parse(name, raw)

    def optional(name: str, parse: Callable[[str, str], _T]) -> _T | None:
        return get(name, parse, None)

    hostname = optional("SMTP_HOSTNAME", _hostname)
    if hostname is None:
        raw = (defaultHostname or socket.gethostname)()
        try:
            hostname = _hostname("SMTP_HOSTNAME", raw)
        except ConfigError:
            raise ConfigError(
                "SMTP_HOSTNAME",
                f"unset and the system host name {raw!r} is not valid; set it",
            ) from None
    localDomains = get("SMTP_LOCAL_DOMAINS", _domains, ())
    localDomains = (hostname,) + tuple(d for d in localDomains if d != hostname)

    fileParser = _readableFile if checkFiles else (lambda n, r: r.strip())

    healthAddr = get("SMTP_HEALTH_ADDR", _text, ":8080").strip()

    # Listeners, in one block.
    listen = get("SMTP_LISTEN", _smtpListeners, None)
    submissionListen = get("SMTP_SUBMISSION_LISTEN", _listeners, ())
    submissionsListen = get("SMTP_SUBMISSIONS_LISTEN", _listeners, ())

    tlsDisable = get("SMTP_TLS_DISABLE", _bool, False)
    tlsCert = optional("SMTP_TLS_CERT", fileParser)
    tlsKey = optional("SMTP_TLS_KEY", fileParser)
    if not tlsDisable and (tlsCert is None) != (tlsKey is None):
        missing = "SMTP_TLS_KEY" if tlsKey is None else "SMTP_TLS_CERT"
        other = "SMTP_TLS_CERT" if tlsKey is None else "SMTP_TLS_KEY"
        raise ConfigError(missing, f"must be set together with {other}")

    retryInitial = get("SMTP_RETRY_INITIAL", lambda n, r: _seconds(n, r, 1), 60.0)
    retryMax = get("SMTP_RETRY_MAX", lambda n, r: _seconds(n, r, 1), 3840.0)
    if retryMax < retryInitial:
        raise ConfigError(
            "SMTP_RETRY_MAX", f"{retryMax:g} is less than SMTP_RETRY_INITIAL ({retryInitial:g})"
        )

    # Webhooks (issue 18)
    webhooks = _webhookSettings(get, optional)

    settings = Settings(
        port=get("SMTP_PORT", _port, 2525),
        listenAddress=get("SMTP_LISTEN_ADDR", _listenAddress, ""),
        hostname=hostname,
        banner=get("SMTP_BANNER", _text, "GopherPost ready"),
        debug=get("SMTP_DEBUG", _bool, False),
        healthAddr=healthAddr,
        healthPort=optional("SMTP_HEALTH_PORT", _port),
        healthDisable=get("SMTP_HEALTH_DISABLE", _bool, False),
        queuePath=get("SMTP_QUEUE_PATH", lambda n, r: r.strip(), "./data/spool"),
        listen=listen,
        submissionListen=submissionListen,
        submissionsListen=submissionsListen,
        allowNetworks=get("SMTP_ALLOW_NETWORKS", _networks, ()),
        allowHosts=get("SMTP_ALLOW_HOSTS", _hosts, ()),
        requireLocalDomain=get("SMTP_REQUIRE_LOCAL_DOMAIN", _bool, True),
        relayNetworks=optional("SMTP_RELAY_NETWORKS", _networks),
        localDomains=localDomains,
        maxMessageSize=get("SMTP_MAX_MESSAGE_SIZE", _size, 10485760),
        maxRecipients=get("SMTP_MAX_RECIPIENTS", lambda n, r: _int(n, r, 1), 100),
        commandTimeout=get("SMTP_COMMAND_TIMEOUT", lambda n, r: _seconds(n, r, 1), 300.0),
        maxConnections=get("SMTP_MAX_CONNECTIONS", _int, 1000),
        maxConnectionsPerIP=get("SMTP_MAX_CONNECTIONS_PER_IP", _int, 50),
        workers=get("SMTP_WORKERS", lambda n, r: _int(n, r, 1, 64), 1),
        tlsDisable=tlsDisable,
        tlsCert=tlsCert,
        tlsKey=tlsKey,
        dnsServers=get("SMTP_DNS_SERVERS", _dnsServers, ()),
        relayHost=optional("SMTP_RELAY_HOST", lambda n, r: parseHostPort(n, r, 25)),
        outboundPort=get("SMTP_OUTBOUND_PORT", _port, 25),
        outboundTLS=get(
            "SMTP_OUTBOUND_TLS", lambda n, r: _choice(n, r, OUTBOUND_TLS_POLICIES), "verify"
        ),
        outboundTimeoutScale=get(
            "SMTP_OUTBOUND_TIMEOUT_SCALE", lambda n, r: _positiveFloat(n, r), 1.0
        ),
        retryInitial=retryInitial,
        retryMax=retryMax,
        queueLifetime=get("SMTP_QUEUE_LIFETIME", lambda n, r: _seconds(n, r, 1), 432000.0),
        queueWorkers=get("SMTP_QUEUE_WORKERS", lambda n, r: _int(n, r, 1), 16),
        destinationConcurrency=get("SMTP_DESTINATION_CONCURRENCY", lambda n, r: _int(n, r, 1), 4),
        dkimSelector=optional("SMTP_DKIM_SELECTOR", _dkimSelector),
        dkimKeyPath=optional("SMTP_DKIM_KEY_PATH", fileParser),
        dkimPrivateKey=optional("SMTP_DKIM_PRIVATE_KEY", lambda n, r: r),
        dkimDomain=optional("SMTP_DKIM_DOMAIN", _hostname),
        # Content filters (issue 21)
        rspamdURL=optional("SMTP_RSPAMD_URL", parseRspamdURL),
        rspamdScope=get("SMTP_RSPAMD_SCOPE", lambda n, r: _choice(n, r, FILTER_SCOPES), "inbound"),
        rspamdTimeout=get("SMTP_RSPAMD_TIMEOUT", _positiveFloat, 20.0),
        filterFail=get(
            "SMTP_FILTER_FAIL", lambda n, r: _choice(n, r, FILTER_FAILURE_ACTIONS), "tempfail"
        ),
        spamd=optional("SMTP_SPAMD", parseSpamdAddress),
        spamdScope=get("SMTP_SPAMD_SCOPE", lambda n, r: _choice(n, r, FILTER_SCOPES), "inbound"),
        spamdTimeout=get("SMTP_SPAMD_TIMEOUT", _positiveFloat, 20.0),
        spamdMaxSize=get("SMTP_SPAMD_MAX_SIZE", _size, 512000),
        spamRejectScore=get("SMTP_SPAM_REJECT_SCORE", _spamScore, _DEFAULT_REJECT_SCORE),
        milters=get("SMTP_MILTERS", parseMilters, ()),
        **webhooks,
        # Inbound
        minDataRate=get("SMTP_MIN_DATA_RATE", _int, 500),
    )
    # Internet MX checks (issue 16).
    banDuration = get("SMTP_BAN_DURATION", lambda n, r: _seconds(n, r, 1), 600.0)
    banMaxDuration = get("SMTP_BAN_MAX_DURATION", lambda n, r: _seconds(n, r, 1), 86400.0)
    if banMaxDuration < banDuration:
        raise ConfigError(
            "SMTP_BAN_MAX_DURATION",
            f"{banMaxDuration:g} is less than SMTP_BAN_DURATION ({banDuration:g})",
        )
    settings = dataclasses.replace(
        settings,
        senderAuth=get("SMTP_SENDER_AUTH", _bool, True),
        spfReject=get(
            "SMTP_SPF_REJECT", lambda n, r: _choice(n, r.strip(), ("never", "fail")), "never"
        ),
        dmarcEnforce=get("SMTP_DMARC_ENFORCE", _bool, True),
        arcTrustedSealers=get("SMTP_ARC_TRUSTED_SEALERS", _domains, ()),
        dnsblZones=get("SMTP_DNSBL_ZONES", _domains, ()),
        rateConnections=get("SMTP_RATE_CONNECTIONS", _int, 600),
        rateMessages=get("SMTP_RATE_MESSAGES", _int, 0),
        rateRecipients=get("SMTP_RATE_RECIPIENTS", _int, 0),
        rateUserMessages=get("SMTP_RATE_USER_MESSAGES", _int, 500),
        greylist=get("SMTP_GREYLIST", _bool, False),
        greylistDelay=get("SMTP_GREYLIST_DELAY", lambda n, r: _seconds(n, r, 1), 300.0),
        greylistAutoWhitelist=get("SMTP_GREYLIST_AUTO_WHITELIST", _int, 5),
        banThreshold=get("SMTP_BAN_THRESHOLD", _int, 10),
        banWindow=get("SMTP_BAN_WINDOW", lambda n, r: _seconds(n, r, 1), 600.0),
        banDuration=banDuration,
        banMaxDuration=banMaxDuration,
        redisURL=optional("SMTP_REDIS_URL", _redisURL),
        redisPrefix=get("SMTP_REDIS_PREFIX", _redisPrefix, "gopherpost:"),
    )
    settings = _webSettings(env, settings)
    # ACME (issue 22).
    settings = dataclasses.replace(
        settings,
        acmeDomains=get("SMTP_ACME_DOMAINS", _acmeDomains, ()),
        acmeEmail=optional("SMTP_ACME_EMAIL", _email),
        acmeDirectory=get("SMTP_ACME_DIRECTORY", _httpsURL, LETS_ENCRYPT_DIRECTORY),
        acmeAgreeTOS=get("SMTP_ACME_AGREE_TOS", _bool, False),
        acmeChallengeListen=get(
            "SMTP_ACME_CHALLENGE_LISTEN", _challengeListen, ACME_CHALLENGE_LISTEN
        ),
        acmeDirectoryCA=optional("SMTP_ACME_DIRECTORY_CA", fileParser),
    )
    if settings.acmeEnabled:
        _checkACME(settings)
    # Authenticated submission (issue 15).
    settings = _authSettings(get, settings)
    # Outbound transport security (issue 19).
    settings = dataclasses.replace(
        settings,
        mtaSts=get("SMTP_MTA_STS", _bool, True),
        mtaStsPort=get("SMTP_MTA_STS_PORT", _port, 443),
        dane=get("SMTP_DANE", _bool, True),
        tlsrpt=get("SMTP_TLSRPT", _bool, False),
    )

    # Operations (issue 14): spool retention.
    settings = dataclasses.replace(
        settings,
        keepDelivered=get("SMTP_KEEP_DELIVERED", _duration, 0.0),
        retentionDays=get("SMTP_RETENTION_DAYS", _int, 0),
        retentionMaxMessages=get("SMTP_RETENTION_MAX_MESSAGES", _int, 0),
    )

    # ESMTP (issue 19): delay warnings.
    settings = dataclasses.replace(
        settings, delayWarning=get("SMTP_DELAY_WARNING", _duration, 14400.0)
    )

    # Checked here so that a bad SMTP_HEALTH_ADDR/PORT fails at start-up.
    if not settings.healthDisable:
        healthAddress(settings)
    _checkListeners(settings)
    openRelay = None if settings.capture else openRelayProblem(settings)
    if openRelay is not None:
        raise ConfigError("SMTP_RELAY_NETWORKS", openRelay)
    if settings.dkimEnabled:
        if settings.dkimSelector is None:
            raise ConfigError(
                "SMTP_DKIM_SELECTOR", "is required when any SMTP_DKIM_* variable is set"
            )
        if settings.dkimPrivateKey is None and settings.dkimKeyPath is None:
            raise ConfigError(
                "SMTP_DKIM_KEY_PATH",
                "DKIM is enabled but neither SMTP_DKIM_PRIVATE_KEY nor SMTP_DKIM_KEY_PATH is set",
            )
    return settings


def _listenAddress(name: str, raw: str) -> str:
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not an IP address") from None


def _positiveFloat(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(name, f"{raw!r} must be a positive number")
    return value


def _dkimSelector(name: str, raw: str) -> str:
    return _hostname(name, raw)


def _listeners(name: str, raw: str) -> tuple[ListenerSpec, ...]:
    try:
        return parseListeners(name, raw)
    except EndpointError as e:
        raise ConfigError(name, str(e)) from None


def _smtpListeners(name: str, raw: str) -> tuple[ListenerSpec, ...] | None:
    if raw.strip().lower() == "none":
        return ()
    return _listeners(name, raw) or None


def _checkListeners(settings: Settings) -> None:
    """
    The listeners make sense together: something listens, the TLS roles
    have TLS, and no endpoint is given twice.
    """
    if settings.listen == () and not (settings.submissionListen or settings.submissionsListen):
        raise ConfigError(
            "SMTP_LISTEN",
            "is none and neither SMTP_SUBMISSION_LISTEN nor SMTP_SUBMISSIONS_LISTEN is set: "
            "nothing to listen on",
        )
    if settings.tlsDisable:
        if settings.submissionListen:
            raise ConfigError(
                "SMTP_SUBMISSION_LISTEN",
                "submission requires STARTTLS, which SMTP_TLS_DISABLE=true switches off",
            )
        if settings.submissionsListen:
            raise ConfigError(
                "SMTP_SUBMISSIONS_LISTEN",
                "implicit TLS needs TLS, which SMTP_TLS_DISABLE=true switches off",
            )
    seen: dict[tuple, ListenerSpec] = {}
    for spec in (
        *(settings.listen or ()),
        *settings.submissionListen,
        *settings.submissionsListen,
    ):
        if spec.kind == "systemd":
            key: tuple = ("systemd", spec.index, spec.name)
        else:
            key = ("tcp", spec.interface, spec.port)
        if key in seen and not (spec.kind == "tcp" and spec.port == 0):
            first = seen[key]
            if first.variable == spec.variable and first.description == spec.description:
                problem = "is listed twice"
            elif first.description == spec.description:
                problem = f"is also in {first.variable}"
            else:
                problem = f"is the same listener as {first.description!r} in {first.variable}"
            raise ConfigError(spec.variable, f"{spec.description!r} {problem}")
        seen[key] = spec


# Internet MX checks (issue 16).


def redactURL(text: str) -> str:
    """
    C{text} with any password of a URL replaced by C{***}, for messages.
    """
    scheme, sep, rest = text.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at:
        return text
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}" if ":" in userinfo else text


def _redisURL(name: str, raw: str) -> str:
    from urllib.parse import urlsplit

    text = raw.strip()
    shown = redactURL(text)
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as e:
        raise ConfigError(name, f"{shown!r} is not a Redis URL ({e})") from None
    if url.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            name, f"{shown!r}: use redis://host:port/db, rediss://... or unix:///path"
        )
    if url.scheme == "unix":
        if not url.path:
            raise ConfigError(name, f"{shown!r} has no socket path")
        return text
    if not url.hostname:
        raise ConfigError(name, f"{shown!r} has no host")
    if port == 0:
        raise ConfigError(name, f"{shown!r}: port 0 is not a valid TCP port")
    database = url.path.strip("/")
    if database and not database.isdigit():
        raise ConfigError(name, f"{shown!r}: the database {database!r} is not a number")
    return text


def _redisPrefix(name: str, raw: str) -> str:
    text = raw.strip()
    if not all("!" <= c <= "~" for c in text):
        raise ConfigError(name, f"{raw!r}: use printable characters without spaces")
    return text


# Operations (issue 14).

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(name: str, raw: str) -> float:
    """
    A duration: seconds (C{90}), or a number with a unit, C{s}, C{m},
    C{h}, C{d} or C{w} (C{30m}, C{7d}).
    """
    text = raw.strip().lower()
    unit = text[-1:] if text[-1:] in _DURATION_UNITS else "s"
    number = text[:-1] if text[-1:] in _DURATION_UNITS else text
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(
            name, f"{raw!r} is not a duration (seconds, or e.g. 30m, 12h, 7d)"
        ) from None
    if not value == value or value in (float("inf"), float("-inf")) or value < 0:
        raise ConfigError(name, f"{raw!r} is not a duration (seconds, or e.g. 30m, 12h, 7d)")
    return value * _DURATION_UNITS[unit]


# ACME (issue 22).


def _acmeDomains(name: str, raw: str) -> tuple[str, ...]:
    domains: list[str] = []
    for item in _list(raw):
        if item.startswith("*."):
            raise ConfigError(
                name, f"{item!r}: a wildcard needs DNS-01, and GopherPost answers HTTP-01 only"
            )
        try:
            ipaddress.ip_address(item.strip("[]"))
        except ValueError:
            pass
        else:
            raise ConfigError(name, f"{item!r}: list host names, not IP addresses")
        domain = _hostname(name, item)
        if "." not in domain:
            raise ConfigError(name, f"{item!r} is not a fully qualified host name")
        if domain not in domains:
            domains.append(domain)
    if len(domains) > 100:
        raise ConfigError(name, f"{len(domains)} names; a certificate holds at most 100")
    return tuple(domains)


def _email(name: str, raw: str) -> str:
    text = raw.strip()
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:") :]
    local, at, domain = text.rpartition("@")
    if (
        not at
        or not local
        or any(c.isspace() or c in ',<>"' for c in local)
        or not all(c.isprintable() for c in local)
    ):
        raise ConfigError(name, f"{raw!r} is not an email address")
    return f"{local}@{_hostname(name, domain)}"


def _httpsURL(name: str, raw: str) -> str:
    from urllib.parse import urlsplit

    text = raw.strip()
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as e:
        raise ConfigError(name, f"{text!r} is not a URL ({e})") from None
    if url.scheme != "https" or not url.hostname:
        raise ConfigError(name, f"{text!r}: an ACME directory is an https:// URL (RFC 8555)")
    if port == 0:
        raise ConfigError(name, f"{text!r}: port 0 is not a valid TCP port")
    return text


def _challengeListen(name: str, raw: str) -> ListenerSpec:
    try:
        return parseEndpoint(name, raw)
    except EndpointError as e:
        raise ConfigError(name, f"{raw.strip()!r}: {e}") from None


def _checkACME(settings: Settings) -> None:
    """
    ACME's settings together with the others.
    """
    if not settings.acmeAgreeTOS:
        raise ConfigError(
            "SMTP_ACME_AGREE_TOS",
            "must be true to use ACME (SMTP_ACME_DOMAINS is set): it says you agree to "
            f"the terms of service of the CA at {settings.acmeDirectory}",
        )
    if settings.tlsDisable:
        raise ConfigError(
            "SMTP_TLS_DISABLE",
            "is true, but SMTP_ACME_DOMAINS asks for a certificate: unset one of them",
        )
    for variable, value in (("SMTP_TLS_CERT", settings.tlsCert), ("SMTP_TLS_KEY", settings.tlsKey)):
        if value is not None:
            raise ConfigError(
                variable,
                "must be empty when SMTP_ACME_DOMAINS is set: ACME provides the certificate",
            )
    if settings.workers > 1:
        raise ConfigError(
            "SMTP_WORKERS",
            "ACME certificates (SMTP_ACME_DOMAINS) are served by a single process for now: "
            "set SMTP_WORKERS=1",
        )


# Webhooks (issue 18)

#: The accepted values of C{SMTP_WEBHOOK_SCOPE}.
WEBHOOK_SCOPES = ("local", "all")


def _webhookURL(name: str, raw: str) -> str:
    """
    An C{http://} or C{https://} URL with a host (and optionally a port,
    user and password); no fragment.
    """
    text = raw.strip()
    if any(c.isspace() for c in text) or not text.isprintable():
        raise ConfigError(name, f"{raw!r} is not a URL (no spaces or control characters)")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ConfigError(name, f"{raw!r} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(name, f"{raw!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ConfigError(name, f"{raw!r} has no host")
    if port == 0:
        raise ConfigError(name, f"{raw!r}: port 0 is not a valid TCP port")
    if parts.fragment or text.endswith("#"):
        raise ConfigError(name, f"{raw!r} has a fragment (#...), which HTTP never sends")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise ConfigError(name, f"{raw!r}: the host name is not valid") from None
    return text


def _webhookSecret(name: str, raw: str) -> str:
    from gopherpost.webhooks.signing import parseSecret

    try:
        parseSecret(raw.strip())
    except ValueError as e:
        raise ConfigError(name, str(e)) from None
    return raw.strip()


def _webhookSettings(get: Callable[..., Any], optional: Callable[..., Any]) -> dict[str, Any]:
    """
    The C{SMTP_WEBHOOK_*} and C{SMTP_EVENTS_WEBHOOK_*} variables, as
    L{Settings} fields.
    """
    url = optional("SMTP_WEBHOOK_URL", _webhookURL)
    secret = optional("SMTP_WEBHOOK_SECRET", _webhookSecret)
    eventsURL = optional("SMTP_EVENTS_WEBHOOK_URL", _webhookURL)
    eventsSecret = optional("SMTP_EVENTS_WEBHOOK_SECRET", _webhookSecret)
    if url is not None and secret is None:
        raise ConfigError("SMTP_WEBHOOK_SECRET", "is required with SMTP_WEBHOOK_URL")
    if eventsURL is not None and eventsSecret is None and secret is None:
        raise ConfigError(
            "SMTP_EVENTS_WEBHOOK_SECRET",
            "is required with SMTP_EVENTS_WEBHOOK_URL (or set SMTP_WEBHOOK_SECRET)",
        )
    initial = get("SMTP_WEBHOOK_RETRY_INITIAL", lambda n, r: _seconds(n, r, 1), 10.0)
    maximum = get("SMTP_WEBHOOK_RETRY_MAX", lambda n, r: _seconds(n, r, 1), 3600.0)
    if maximum < initial:
        raise ConfigError(
            "SMTP_WEBHOOK_RETRY_MAX",
            f"{maximum:g} is less than SMTP_WEBHOOK_RETRY_INITIAL ({initial:g})",
        )
    return {
        "webhookURL": url,
        "webhookSecret": secret,
        "webhookScope": get(
            "SMTP_WEBHOOK_SCOPE", lambda n, r: _choice(n, r.strip(), WEBHOOK_SCOPES), "local"
        ),
        "webhookMaxInline": get("SMTP_WEBHOOK_MAX_INLINE", _size, 1048576),
        "webhookRaw": get("SMTP_WEBHOOK_RAW", _bool, False),
        "webhookTimeout": get("SMTP_WEBHOOK_TIMEOUT", lambda n, r: _seconds(n, r, 1), 15.0),
        "webhookRetryInitial": initial,
        "webhookRetryMax": maximum,
        "webhookLifetime": get("SMTP_WEBHOOK_LIFETIME", lambda n, r: _seconds(n, r, 60), 259200.0),
        "webhookConcurrency": get("SMTP_WEBHOOK_CONCURRENCY", lambda n, r: _int(n, r, 1, 256), 4),
        "eventsWebhookURL": eventsURL,
        "eventsWebhookSecret": eventsSecret,
    }


# Content filters (issue 21): SMTP_RSPAMD_URL, SMTP_SPAMD, SMTP_MILTERS.


def parseRspamdURL(name: str, raw: str) -> str:
    """
    An rspamd URL: C{http://host:port} (or C{https://}), optionally with a
    path prefix; C{/checkv2} is added by the client unless it is there.

    @return: the URL without a trailing slash.
    @raise ConfigError: for anything else.
    """
    from urllib.parse import urlsplit

    text = raw.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ConfigError(name, f"{raw!r} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(name, f"{raw!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ConfigError(name, f"{raw!r} has no host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(name, f"{raw!r}: give only scheme, host, port and path")
    if port == 0:
        raise ConfigError(name, f"{raw!r} is not a valid TCP port (1-65535)")
    return text.rstrip("/")


def parseSpamdAddress(name: str, raw: str) -> SpamdAddress:
    """
    C{host:port} (port 783 when left out) or C{unix:/path}.
    """
    text = raw.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path.startswith("/"):
            raise ConfigError(name, f"{raw!r}: unix: needs an absolute socket path")
        return SpamdAddress(path=path)
    host, port = parseHostPort(name, text, 783)
    return SpamdAddress(host=host, port=port)


def _spamScore(name: str, raw: str) -> float | None:
    if raw.strip().lower() == "none":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not a score (a number, or none)") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(name, f"{raw!r} is not a score (a number, or none)")
    return value


_DEFAULT_REJECT_SCORE: float | None = 10.0

_MILTER_OPTIONS = ("timeout", "default", "scope", "name")


def _milterAddress(name: str, item: str) -> MilterSpec:
    kind, colon, rest = item.partition(":")
    kind = kind.strip().lower()
    if not colon or kind not in ("inet", "inet6", "unix", "local"):
        raise ConfigError(
            name, f"{item!r}: a milter is inet:host:port, inet:port@host or unix:/path"
        )
    if kind in ("unix", "local"):
        if not rest.startswith("/"):
            raise ConfigError(name, f"{item!r}: {kind}: needs an absolute socket path")
        return MilterSpec(address=item, path=rest)
    if "@" in rest:
        # Sendmail's form: inet:port@host
        portText, _, hostText = rest.partition("@")
        host, port = parseHostPort(
            name, f"[{hostText}]:{portText}" if ":" in hostText else f"{hostText}:{portText}", None
        )
    else:
        host, port = parseHostPort(name, rest, None)
    return MilterSpec(address=item, host=host, port=port)


def parseMilters(name: str, raw: str) -> tuple[MilterSpec, ...]:
    """
    C{SMTP_MILTERS}: a comma list of C{inet:host:port}, C{inet:port@host}
    or C{unix:/path}, each optionally followed by C{;timeout=SECONDS},
    C{;default=tempfail|accept|reject}, C{;scope=all|inbound} and
    C{;name=NAME}.
    """
    from dataclasses import replace

    specs = []
    names: set[str] = set()
    for item in _list(raw):
        address, *options = [part.strip() for part in item.split(";")]
        spec = _milterAddress(name, address)
        values: dict[str, str] = {}
        for option in options:
            if not option:
                continue
            key, equals, value = option.partition("=")
            key = key.strip().lower()
            if not equals or key not in _MILTER_OPTIONS:
                raise ConfigError(
                    name, f"{option!r} in {item!r}: options are {', '.join(_MILTER_OPTIONS)}"
                )
            values[key] = value.strip()
        timeout = _positiveFloat(name, values["timeout"]) if "timeout" in values else spec.timeout
        default = None
        if "default" in values:
            default = _choice(name, values["default"], FILTER_FAILURE_ACTIONS + ("reject",))
        scope = _choice(name, values["scope"], FILTER_SCOPES) if "scope" in values else "all"
        milterName = values.get("name") or f"milter:{spec.address}"
        if not all(c.isalnum() or c in "-_.:/@[]" for c in milterName):
            raise ConfigError(name, f"name={milterName!r}: letters, digits and -_.:/@ only")
        if milterName in names:
            raise ConfigError(name, f"{milterName!r} is listed twice (give each a name=)")
        names.add(milterName)
        specs.append(replace(spec, name=milterName, timeout=timeout, default=default, scope=scope))
    return tuple(specs)


# Web UI, message index and capture mode (issue 17).

#: C{SMTP_WEB_LISTEN} in capture mode when it is not set.
CAPTURE_WEB_LISTEN = "tcp:8025:interface=127.0.0.1"


def _webSettings(env: Mapping[str, str], settings: Settings) -> Settings:
    """
    Parse the variables of the web UI, the message index and capture mode
    into C{settings}.

    Capture mode changes three defaults, for a developer's machine: the web
    UI listens on C{127.0.0.1:8025} (C{SMTP_WEB_LISTEN=none}: no UI), only
    loopback clients may connect when neither allow-list is set, and any
    sender domain is accepted unless C{SMTP_REQUIRE_LOCAL_DOMAIN} says
    otherwise.
    """
    from dataclasses import replace

    from gopherpost.webui.listen import parseWebAuth, parseWebListen

    def raw(name: str) -> str | None:
        value = env.get(name)
        if value is None or value.strip() == "":
            return None
        return value

    capture = _bool("SMTP_CAPTURE", raw("SMTP_CAPTURE") or "false")
    listen = raw("SMTP_WEB_LISTEN")
    if listen is None and capture:
        listen = CAPTURE_WEB_LISTEN
    if listen is not None and listen.strip().lower() == "none":
        listen = None
    auth = raw("SMTP_WEB_AUTH")
    webAuth = parseWebAuth("SMTP_WEB_AUTH", auth) if auth is not None else None
    webListen = "" if listen is None else parseWebListen("SMTP_WEB_LISTEN", listen, webAuth)
    maxMessages = raw("SMTP_CAPTURE_MAX_MESSAGES")
    changes: dict = {
        "webListen": webListen,
        "webAuth": webAuth,
        "capture": capture,
        "captureMaxMessages": 500
        if maxMessages is None
        else _int("SMTP_CAPTURE_MAX_MESSAGES", maxMessages),
        "indexRelayed": _bool("SMTP_INDEX_RELAYED", raw("SMTP_INDEX_RELAYED") or "false"),
        "releaseTo": _releasePatterns("SMTP_RELEASE_TO", raw("SMTP_RELEASE_TO") or ""),
    }
    if capture:
        if raw("SMTP_ALLOW_NETWORKS") is None and raw("SMTP_ALLOW_HOSTS") is None:
            changes["allowNetworks"] = _networks("SMTP_ALLOW_NETWORKS", "127.0.0.0/8,::1/128")
        if raw("SMTP_REQUIRE_LOCAL_DOMAIN") is None:
            changes["requireLocalDomain"] = False
    return replace(settings, **changes)


def _releasePatterns(name: str, raw: str) -> tuple[str, ...]:
    patterns = []
    for item in _list(raw):
        if any(c.isspace() for c in item) or "@" not in item:
            raise ConfigError(
                name, f"{item!r} is not an address pattern (e.g. *@example.org, me@example.org)"
            )
        patterns.append(item.lower())
    return tuple(patterns)


# Authenticated submission (issue 15).


def _usersFile(name: str, raw: str) -> str:
    path = raw.strip()
    if "\0" in path or "\n" in path:
        raise ConfigError(name, f"{raw!r} is not a file name")
    if os.path.isdir(path):
        raise ConfigError(name, f"{path!r} is a directory, not a users file")
    return path


def _authSettings(get: Callable[..., Any], settings: Settings) -> Settings:
    """
    The C{SMTP_USERS_FILE} and C{SMTP_AUTH_*} variables, into C{settings}.
    """
    duration = get("SMTP_AUTH_LOCKOUT_DURATION", lambda n, r: _seconds(n, r, 1), 600.0)
    maxDuration = get("SMTP_AUTH_LOCKOUT_MAX_DURATION", lambda n, r: _seconds(n, r, 1), 86400.0)
    if maxDuration < duration:
        raise ConfigError(
            "SMTP_AUTH_LOCKOUT_MAX_DURATION",
            f"{maxDuration:g} is less than SMTP_AUTH_LOCKOUT_DURATION ({duration:g})",
        )
    settings = dataclasses.replace(
        settings,
        usersFile=get("SMTP_USERS_FILE", _usersFile, None),
        authOnSMTP=get("SMTP_AUTH_ON_SMTP", _bool, False),
        authMaxFailures=get("SMTP_AUTH_MAX_FAILURES", lambda n, r: _int(n, r, 1, 100), 3),
        authCheckFrom=get("SMTP_AUTH_CHECK_FROM", _bool, False),
        authLockoutFailures=get("SMTP_AUTH_LOCKOUT_FAILURES", lambda n, r: _int(n, r, 0, 1000), 5),
        authUserLockoutFailures=get(
            "SMTP_AUTH_USER_LOCKOUT_FAILURES", lambda n, r: _int(n, r, 0, 1000), 10
        ),
        authLockoutWindow=get("SMTP_AUTH_LOCKOUT_WINDOW", lambda n, r: _seconds(n, r, 1), 600.0),
        authLockoutDuration=duration,
        authLockoutMaxDuration=maxDuration,
    )
    if settings.authOnSMTP and settings.tlsDisable:
        raise ConfigError(
            "SMTP_AUTH_ON_SMTP",
            "AUTH is only offered over TLS, which SMTP_TLS_DISABLE=true switches off",
        )
    return settings
