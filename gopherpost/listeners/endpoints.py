# -*- test-case-name: tests.test_endpoints -*-
"""
Listener settings (C{SMTP_LISTEN}, C{SMTP_SUBMISSION_LISTEN},
C{SMTP_SUBMISSIONS_LISTEN}): comma-separated Twisted endpoint strings, parsed
into L{ListenerSpec} values without touching the network.

The kinds GopherPost listens on::

    tcp:PORT[:interface=IPv4-or-IPv6][:backlog=N]     every IPv4 address by default
    tcp6:PORT[:interface=IPv6][:backlog=N]            every address (::) by default
    systemd:domain=INET6:index=N                      socket activation, by position
    systemd:domain=INET6:name=NAME                    ... or by FileDescriptorName=
    haproxy:<one of the above>                        PROXY protocol v1/v2 in front

As in Twisted, C{\\:} is a literal colon (C{interface=\\:\\:1}); an IPv6
address may also be written in brackets (C{interface=[::1]}).  Other Twisted
kinds (C{unix:}, C{ssl:}, ...) are refused: a session needs an IP client
address, and implicit TLS is the submissions listener's job.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

__all__ = [
    "LISTEN_BACKLOG",
    "EndpointError",
    "ListenerSpec",
    "parseEndpoint",
    "parseListeners",
    "defaultListener",
    "everyAddress",
]

#: Pending connections the kernel queues for a listener (Twisted's default of
#: 50 overflows under bursts; the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 1024

_KINDS = "tcp:, tcp6:, systemd: or haproxy:"


class EndpointError(ValueError):
    """
    An endpoint string does not parse; the message is one line.
    """


@dataclass(frozen=True)
class ListenerSpec:
    """
    One listener, as configured.

    @ivar variable: the setting it comes from, for messages (C{SMTP_PORT}
        for the default listener).
    @ivar description: the endpoint string (or, for the default listener,
        the equivalent one).
    @ivar kind: C{"tcp"} (C{tcp:} and C{tcp6:}) or C{"systemd"}.
    @ivar port: the TCP port (C{tcp}).
    @ivar interface: the IP address to bind (C{tcp}; C{0.0.0.0} or C{::}
        for every address).
    @ivar backlog: the listen queue (C{tcp}).
    @ivar index: the position of the inherited socket (C{systemd}).
    @ivar name: the name of the inherited socket (C{systemd}).
    @ivar domain: C{"INET"} or C{"INET6"}, or L{None} for either (C{systemd}).
    @ivar proxy: a PROXY protocol header comes first (C{haproxy:}).
    """

    variable: str
    description: str
    kind: str
    port: int = 0
    interface: str = ""
    backlog: int = LISTEN_BACKLOG
    index: int | None = None
    name: str | None = None
    domain: str | None = None
    proxy: bool = False

    @property
    def ipv6(self) -> bool:
        """
        Whether a C{tcp} listener binds an IPv6 socket.
        """
        return ":" in self.interface

    @property
    def address(self) -> str:
        """
        C{host:port} or C{[v6]:port} of a C{tcp} listener, or the inherited
        socket of a C{systemd} one, for messages.
        """
        if self.kind == "systemd":
            which = f"index {self.index}" if self.name is None else f"name {self.name!r}"
            return f"the inherited socket ({which})"
        host = f"[{self.interface}]" if self.ipv6 else self.interface
        return f"{host}:{self.port}"


def _tokens(text: str) -> list[tuple[str, int]]:
    """
    Split an endpoint string at unescaped colons.

    @return: C{(token, equals)} pairs: the token with its escapes removed,
        and the index of its first unescaped C{=} (-1 if none).
    """
    tokens: list[tuple[str, int]] = []
    current: list[str] = []
    equals = -1
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 == len(text):
                raise EndpointError("ends with a lone backslash")
            current.append(text[i + 1])
            i += 2
            continue
        if char == "[":
            end = text.find("]", i)
            if end < 0:
                raise EndpointError("'[' without ']'")
            current.append(text[i + 1 : end])
            i = end + 1
            continue
        if char == ":":
            tokens.append(("".join(current), equals))
            current, equals = [], -1
        elif char == "=" and equals < 0:
            equals = len("".join(current))
            current.append(char)
        else:
            current.append(char)
        i += 1
    tokens.append(("".join(current), equals))
    return tokens


def _arguments(
    tokens: list[tuple[str, int]], kind: str, allowed: tuple[str, ...]
) -> tuple[list[str], dict[str, str]]:
    positional: list[str] = []
    keywords: dict[str, str] = {}
    for token, equals in tokens:
        if equals < 0:
            if keywords:
                if "interface" in keywords:
                    raise EndpointError(
                        "write an IPv6 interface in brackets (interface=[::1])"
                        " or with escaped colons (interface=\\:\\:1)"
                    )
                raise EndpointError(f"{token!r} after a key=value option")
            positional.append(token)
            continue
        key, value = token[:equals].strip().lower(), token[equals + 1 :].strip()
        if key not in allowed:
            raise EndpointError(f"{kind}: has no option {key!r} (it takes {', '.join(allowed)})")
        if key in keywords:
            raise EndpointError(f"{key}= is given twice")
        keywords[key] = value
    return positional, keywords


def _number(what: str, raw: str, minimum: int, maximum: int) -> int:
    text = raw.strip()
    if not text.isdigit() or not minimum <= int(text) <= maximum:
        raise EndpointError(f"{what} {raw!r} is not a number from {minimum} to {maximum}")
    return int(text)


def _tcp(
    tokens: list[tuple[str, int]], ipv6: bool, variable: str, description: str, proxy: bool
) -> ListenerSpec:
    kind = "tcp6" if ipv6 else "tcp"
    positional, keywords = _arguments(tokens, kind, ("port", "interface", "backlog"))
    if len(positional) > 1:
        if all(p.strip().isdigit() or not p for p in positional):
            raise EndpointError(
                f"{kind}: takes one port; write an IPv6 interface as interface=[::1] "
                "or with escaped colons (interface=\\:\\:1)"
            )
        raise EndpointError(f"{kind}: takes one port; give the address as interface=")
    if positional and "port" in keywords:
        raise EndpointError("the port is given twice")
    rawPort = positional[0] if positional else keywords.get("port")
    if rawPort is None or not rawPort.strip():
        raise EndpointError(f"{kind}: needs a port, e.g. {kind}:25")
    port = _number("port", rawPort, 0, 65535)
    interface = keywords.get("interface", "")
    if interface:
        try:
            address = ipaddress.ip_address(interface)
        except ValueError:
            raise EndpointError(
                f"interface {interface!r} is not an IP address (a host name is not accepted)"
            ) from None
        if ipv6 and address.version != 6:
            raise EndpointError(
                f"tcp6: needs an IPv6 interface, not {interface}; use tcp: for IPv4"
            )
        interface = str(address)
    else:
        interface = "::" if ipv6 else "0.0.0.0"
    backlog = LISTEN_BACKLOG
    if "backlog" in keywords:
        backlog = _number("backlog", keywords["backlog"], 1, 65535)
    return ListenerSpec(variable, description, "tcp", port, interface, backlog, proxy=proxy)


def _systemd(
    tokens: list[tuple[str, int]], variable: str, description: str, proxy: bool
) -> ListenerSpec:
    positional, keywords = _arguments(tokens, "systemd", ("domain", "index", "name"))
    if len(positional) > 1 or (positional and "domain" in keywords):
        raise EndpointError("systemd: takes domain=, and index= or name=")
    domain = (positional[0] if positional else keywords.get("domain", "")).strip().upper()
    if domain and domain not in ("INET", "INET6"):
        raise EndpointError(f"systemd: domain {domain!r} is not INET or INET6")
    if ("index" in keywords) == ("name" in keywords):
        raise EndpointError(
            "systemd: needs exactly one of index=N (the socket's position) or name=NAME"
        )
    index = name = None
    if "index" in keywords:
        index = _number("index", keywords["index"], 0, 1023)
    else:
        name = keywords["name"]
        if not name or ":" in name:
            raise EndpointError(f"systemd: name {name!r} is not a socket name")
    return ListenerSpec(
        variable, description, "systemd", index=index, name=name, domain=domain or None, proxy=proxy
    )


def parseEndpoint(variable: str, text: str) -> ListenerSpec:
    """
    Parse one endpoint string.

    @param variable: the setting it comes from.
    @raise EndpointError: it does not parse or is not a kind we listen on.
    """
    description = text.strip()
    tokens = _tokens(description)
    proxy = False
    kind = tokens[0][0].strip().lower()
    if kind == "haproxy":
        proxy = True
        tokens = tokens[1:]
        kind = tokens[0][0].strip().lower() if tokens else ""
        if kind == "haproxy":
            raise EndpointError("haproxy: is given twice")
        if not kind:
            raise EndpointError("haproxy: must wrap an endpoint, e.g. haproxy:tcp:25")
    if tokens[0][1] >= 0 or not kind:
        raise EndpointError(f"does not start with an endpoint kind ({_KINDS})")
    if kind in ("tcp", "tcp6"):
        return _tcp(tokens[1:], kind == "tcp6", variable, description, proxy)
    if kind == "systemd":
        return _systemd(tokens[1:], variable, description, proxy)
    raise EndpointError(f"endpoint kind {kind + ':'!r} is not supported (use {_KINDS})")


def parseListeners(variable: str, raw: str) -> tuple[ListenerSpec, ...]:
    """
    Parse a comma-separated list of endpoint strings.

    @raise EndpointError: naming the item that does not parse.
    """
    specs = []
    for item in raw.split(","):
        if not item.strip():
            continue
        try:
            specs.append(parseEndpoint(variable, item))
        except EndpointError as e:
            raise EndpointError(f"{item.strip()!r}: {e}") from None
    return tuple(specs)


def everyAddress() -> str:
    """
    The address meaning "every address": C{::} where the host has IPv6
    (which takes IPv4 too), else C{0.0.0.0}.
    """
    if not socket.has_ipv6:
        return "0.0.0.0"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return "0.0.0.0"
    return "::"


def defaultListener(listenAddress: str, port: int) -> ListenerSpec:
    """
    The SMTP listener when C{SMTP_LISTEN} is unset: C{SMTP_LISTEN_ADDR}
    (default every address) and C{SMTP_PORT}, as before the setting
    existed.  Errors about it name C{SMTP_PORT}.
    """
    interface = listenAddress or everyAddress()
    if ":" in interface:
        description = "tcp6:%d:interface=%s" % (port, interface.replace(":", "\\:"))
    else:
        description = "tcp:%d:interface=%s" % (port, interface)
    return ListenerSpec("SMTP_PORT", description, "tcp", port, interface)
