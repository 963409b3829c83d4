# -*- test-case-name: tests.test_webui_access -*-
"""
C{SMTP_WEB_LISTEN} and C{SMTP_WEB_AUTH}: the web UI's endpoint string, and
the rule that it serves without a password only on loopback.

An endpoint string is what L{twisted.internet.endpoints.serverFromString}
takes (C{tcp:8025:interface=127.0.0.1}, C{tcp6:8025:interface=\\:\\:1},
C{unix:/run/gopherpost/web.sock}, C{systemd:domain=INET:index=0},
C{haproxy:tcp:8025}, ...).  It is checked at start-up, before anything is
bound: it must parse, and unless C{SMTP_WEB_AUTH} is set it must name a
loopback interface (or a UNIX socket); a TCP endpoint without
C{interface=} listens everywhere and so needs a password, as does one whose
address cannot be known before it is bound (C{systemd:}).
"""

from __future__ import annotations

import ipaddress

from gopherpost.config import ConfigError
from gopherpost.webui.password import parseScryptHash

__all__ = ["parseWebAuth", "parseWebListen", "endpointIsLocal", "isLoopbackHost"]

_TCP_KINDS = ("tcp", "tcp6", "ssl")


def _split(description: str) -> list[str]:
    """
    Split an endpoint string at the colons that are not escaped.
    """
    parts, current, escaped = [], [], False
    for c in description:
        if escaped:
            current.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return parts


def isLoopbackHost(host: str) -> bool:
    """
    Whether C{host} (an IP literal, possibly in brackets) is a loopback
    address.
    """
    host = host.strip().strip("[]")
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def endpointIsLocal(description: str) -> bool:
    """
    Whether the server endpoint C{description} can only be reached from
    this machine: TCP on a loopback C{interface=}, or a UNIX socket.
    """
    parts = _split(description.strip())
    kind = parts[0].lower()
    if kind == "haproxy":
        return endpointIsLocal(description.strip().split(":", 1)[1]) if len(parts) > 1 else False
    if kind == "unix":
        return True
    if kind not in _TCP_KINDS:
        return False
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep and key == "interface":
            return isLoopbackHost(value)
    return False


def parseWebListen(name: str, raw: str, webAuth: tuple[str, str] | None) -> str:
    """
    Check C{SMTP_WEB_LISTEN}: it parses as a server endpoint, and it is
    local unless a password is set.

    @return: the endpoint string, stripped.
    @raise ConfigError: naming C{name}.
    """
    from twisted.internet.endpoints import serverFromString

    text = raw.strip()
    try:
        # Parsing only: nothing is bound, the reactor is not used.
        serverFromString(_NoReactor(), text)
    except Exception as e:
        raise ConfigError(
            name, f"{text!r} is not a server endpoint (e.g. tcp:8025:interface=127.0.0.1): {e}"
        ) from None
    if webAuth is None and not endpointIsLocal(text):
        raise ConfigError(
            name,
            f"{text!r} is not bound to loopback (add interface=127.0.0.1): "
            "the web UI serves everyone's mail, so anywhere else set SMTP_WEB_AUTH",
        )
    return text


def parseWebAuth(name: str, raw: str) -> tuple[str, str]:
    """
    Check C{SMTP_WEB_AUTH}: C{user:scrypt:N:r:p$salt$hexdigest} (see
    L{gopherpost.webui.password}).

    @return: C{(user, hash)}.
    @raise ConfigError: naming C{name}.
    """
    text = raw.strip()
    user, sep, hashText = text.partition(":")
    if not sep or not user or any(c.isspace() or not c.isprintable() for c in user):
        raise ConfigError(
            name,
            "must be user:scrypt-hash (make one with: python3 -m gopherpost.webui.password USER)",
        )
    try:
        parseScryptHash(hashText)
    except ValueError as e:
        raise ConfigError(name, f"the hash of {user!r}: {e}") from None
    return (user, hashText)


class _NoReactor:
    """
    Stands in for the reactor while an endpoint string is only parsed.
    """
