# -*- test-case-name: tests.test_config -*-
"""
GopherPost's configuration: C{SMTP_*} environment variables (and a C{.env}
file) turned into one frozen, validated L{Settings} object.

Every variable is parsed strictly.  A bad value raises L{ConfigError}, whose
string form is one line naming the variable and the problem; L{gopherpost.tap}
turns it into a start-up failure before anything is bound.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

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
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
HostPort = tuple[str, int]

#: The accepted values of C{SMTP_OUTBOUND_TLS}.
OUTBOUND_TLS_POLICIES = ("verify", "may", "require", "none")

_T = TypeVar("_T")


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
    The (host, port) the HTTP server listens on: C{SMTP_HEALTH_ADDR} with
    its port replaced by C{SMTP_HEALTH_PORT} when that is set.

    An empty host means every interface.
    """
    addr = settings.healthAddr.strip()
    if addr.startswith(":"):
        host, port = "", _port("SMTP_HEALTH_ADDR", addr[1:])
    else:
        host, port = parseHostPort("SMTP_HEALTH_ADDR", addr, 8080)
    if settings.healthPort is not None:
        port = settings.healthPort
    return (host, port)


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

    def get(name: str, parse: Callable[[str, str], _T], default: _T) -> _T:
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            return default
        return parse(name, raw)

    def optional(name: str, parse: Callable[[str, str], _T]) -> _T | None:
        return get(name, parse, None)  # type: ignore[arg-type]

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
        # Inbound
        minDataRate=get("SMTP_MIN_DATA_RATE", _int, 500),
    )
    # Checked here so that a bad SMTP_HEALTH_ADDR/PORT fails at start-up.
    if not settings.healthDisable:
        healthAddress(settings)
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
