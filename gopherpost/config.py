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

from gopherpost.listeners.endpoints import EndpointError, ListenerSpec, parseListeners

__all__ = [
    "ConfigError",
    "Settings",
    "IPNetwork",
    "HostPort",
    "OUTBOUND_TLS_POLICIES",
    "loadEnvironment",
    "settingsFromEnvironment",
    "parseHostPort",
    "healthAddress",
    "openRelayProblem",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
HostPort = tuple[str, int]

#: The accepted values of C{SMTP_OUTBOUND_TLS}.
OUTBOUND_TLS_POLICIES = ("verify", "may", "require", "none")

_T = TypeVar("_T")
_D = TypeVar("_D")


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

    # Internet MX checks (issue 16): sender authentication, abuse, shared state
    #: C{SMTP_SENDER_AUTH}: check SPF, DKIM, ARC and DMARC for mail from
    #: clients without relay permission and add Authentication-Results.
    senderAuth: bool = True
    #: C{SMTP_SPF_REJECT}: C{never} (record only) or C{fail} (550 5.7.23).
    spfReject: str = "never"
    dmarcEnforce: bool = True
    arcTrustedSealers: tuple[str, ...] = ()
    dnsblZones: tuple[str, ...] = ()
    #: Per client (IPv4 address, IPv6 /64) per minute; 0 is off.
    rateConnections: int = 60
    rateMessages: int = 100
    rateRecipients: int = 500
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
        """
        return domain.rstrip(".").lower() in self.localDomains


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
        rateConnections=get("SMTP_RATE_CONNECTIONS", _int, 60),
        rateMessages=get("SMTP_RATE_MESSAGES", _int, 100),
        rateRecipients=get("SMTP_RATE_RECIPIENTS", _int, 500),
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

    # Operations (issue 14): spool retention.
    settings = dataclasses.replace(
        settings,
        keepDelivered=get("SMTP_KEEP_DELIVERED", _duration, 0.0),
        retentionDays=get("SMTP_RETENTION_DAYS", _int, 0),
        retentionMaxMessages=get("SMTP_RETENTION_MAX_MESSAGES", _int, 0),
    )

    # Checked here so that a bad SMTP_HEALTH_ADDR/PORT fails at start-up.
    if not settings.healthDisable:
        healthAddress(settings)
    _checkListeners(settings)
    openRelay = openRelayProblem(settings)
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
