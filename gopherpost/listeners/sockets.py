# -*- test-case-name: tests.test_listener_sockets -*-
"""
From a L{ListenerSpec} to something that listens: a Twisted endpoint (one
process) or a bound socket (the parent of inbound workers, which hands it to
them), and the sockets systemd passes in (socket activation).

Problems become L{ConfigError}s naming the listener's variable, in one line:
an inherited socket that is not there, an address in use, a port that needs
privileges.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.interfaces import IStreamServerEndpoint

from gopherpost.config import ConfigError
from gopherpost.listeners.endpoints import ListenerSpec

__all__ = [
    "InheritedSockets",
    "listenEndpoint",
    "openListeningSocket",
    "listenProblem",
    "SOCKET_ACTIVATION_VARIABLES",
]

#: What systemd sets for socket activation (sd_listen_fds(3)).
SOCKET_ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

#: The first descriptor systemd passes.
_FIRST_FD = 3

_FAMILIES = {socket.AF_INET: "INET", socket.AF_INET6: "INET6"}


def _isListeningStream(fd: int) -> bool:
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    with probe:
        try:
            return probe.type == socket.SOCK_STREAM and bool(
                probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            )
        except OSError:
            return False


class InheritedSockets:
    """
    The sockets systemd (or C{systemd-socket-activate}) passed to this
    process, from C{LISTEN_PID}, C{LISTEN_FDS} and C{LISTEN_FDNAMES}.

    Both Twisted releases we run on read these variables too, when
    C{twisted.internet.endpoints} is first imported, and then remove
    C{LISTEN_PID} and C{LISTEN_FDS} from the environment; Twisted 22.4 knows
    positions only, and 26.10 ignores the sockets when C{LISTEN_FDNAMES} is
    missing (as with C{systemd-socket-activate} without C{--fdname}).  So
    GopherPost reads them itself, from the environment it captured at
    start-up.  If they are gone nevertheless, the listening stream sockets
    found from descriptor 3 on are taken as the passed ones.

    @ivar descriptors: the passed descriptors, in order.
    @ivar names: their names (C{FileDescriptorName=}), where known.
    @ivar why: why there are none, for messages.
    """

    def __init__(
        self, descriptors: Sequence[int], names: Sequence[str] = (), why: str = ""
    ) -> None:
        self.descriptors = list(descriptors)
        self.names = list(names)
        self.why = why

    @classmethod
    def fromEnvironment(
        cls, environ: Mapping[str, str], pid: int | None = None
    ) -> InheritedSockets:
        """
        Read the variables from C{environ}.

        @param pid: this process's id (default L{os.getpid}).
        """
        pid = os.getpid() if pid is None else pid
        names = [n for n in environ.get("LISTEN_FDNAMES", "").split(":") if n] or []
        rawPID, rawCount = environ.get("LISTEN_PID"), environ.get("LISTEN_FDS")
        if rawPID is None and rawCount is None:
            found: list[int] = []
            fd = _FIRST_FD
            while _isListeningStream(fd) and len(found) < 1024:
                found.append(fd)
                fd += 1
            if found:
                return cls(found, names if len(names) == len(found) else ())
            return cls([], why="no socket was passed to this process (LISTEN_FDS is not set)")
        if rawPID is None or rawCount is None:
            return cls([], why="LISTEN_PID and LISTEN_FDS must be set together")
        if rawPID.strip() != str(pid):
            return cls(
                [],
                why=f"the sockets were passed to process {rawPID.strip()} (LISTEN_PID), "
                f"not to this one ({pid})",
            )
        try:
            count = int(rawCount)
        except ValueError:
            return cls([], why=f"LISTEN_FDS={rawCount!r} is not a number")
        descriptors = list(range(_FIRST_FD, _FIRST_FD + count))
        return cls(descriptors, names if len(names) == count else ())

    def descriptorFor(self, spec: ListenerSpec) -> tuple[int, int]:
        """
        The descriptor and address family of a C{systemd:} listener.

        @raise ConfigError: it was not passed, or is not a listening IPv4 or
            IPv6 stream socket of the requested domain.
        """
        if not self.descriptors:
            raise _problem(
                spec,
                f"{self.why}: start GopherPost from a .socket unit "
                "(or systemd-socket-activate), or listen with tcp:",
            )
        passed = len(self.descriptors)
        if spec.name is not None:
            if spec.name not in self.names:
                known = ", ".join(self.names) if self.names else "none (LISTEN_FDNAMES is not set)"
                raise _problem(spec, f"no socket named {spec.name!r} was passed; names: {known}")
            fd = self.descriptors[self.names.index(spec.name)]
        else:
            assert spec.index is not None
            if spec.index >= passed:
                raise _problem(
                    spec,
                    f"index {spec.index}, but {passed} socket{'s' if passed != 1 else ''} "
                    f"{'were' if passed != 1 else 'was'} passed (index 0 is the first)",
                )
            fd = self.descriptors[spec.index]
        try:
            probe = socket.socket(fileno=os.dup(fd))
        except OSError as e:
            raise _problem(spec, f"descriptor {fd} is not a socket: {e.strerror}") from None
        with probe:
            family, kind = probe.family, probe.type
            try:
                listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            except OSError:
                listening = 0
        if family not in _FAMILIES or kind != socket.SOCK_STREAM or not listening:
            raise _problem(
                spec, f"descriptor {fd} is not a listening TCP socket (ListenStream= in the unit)"
            )
        domain = _FAMILIES[family]
        if spec.domain is not None and spec.domain != domain:
            raise _problem(spec, f"domain={spec.domain}, but the passed socket is {domain}")
        return fd, family


def _problem(spec: ListenerSpec, problem: str) -> ConfigError:
    return ConfigError(spec.variable, f"{spec.description}: {problem}")


def listenEndpoint(
    spec: ListenerSpec, reactor: Any, inherited: InheritedSockets
) -> IStreamServerEndpoint:
    """
    The Twisted endpoint that listens as C{spec} says (the PROXY and TLS
    layers are the factory's business, see L{gopherpost.wiring}).

    @raise ConfigError: a C{systemd:} socket was not passed.
    """
    from twisted.internet.endpoints import (
        AdoptedStreamServerEndpoint,
        TCP4ServerEndpoint,
        TCP6ServerEndpoint,
    )

    if spec.kind == "systemd":
        fd, family = inherited.descriptorFor(spec)
        return AdoptedStreamServerEndpoint(reactor, fd, family)
    endpointType = TCP6ServerEndpoint if spec.ipv6 else TCP4ServerEndpoint
    return endpointType(reactor, spec.port, spec.backlog, spec.interface)


def openListeningSocket(spec: ListenerSpec, inherited: InheritedSockets) -> socket.socket:
    """
    A listening, non-blocking socket for C{spec} (for inbound workers).

    @raise ConfigError: it cannot be bound, or a C{systemd:} socket was not
        passed.
    """
    if spec.kind == "systemd":
        fd, family = inherited.descriptorFor(spec)
        sock = socket.socket(family, socket.SOCK_STREAM, fileno=fd)
    else:
        family = socket.AF_INET6 if spec.ipv6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((spec.interface, spec.port))
            sock.listen(spec.backlog)
        except OSError as e:
            sock.close()
            raise listenProblem(spec, e) from None
    sock.setblocking(False)
    return sock


def listenProblem(spec: ListenerSpec, error: BaseException) -> ConfigError:
    """
    The one-line error for a listener that could not listen.

    @param error: the L{OSError}, or Twisted's C{CannotListenError} around
        one.
    """
    cause = getattr(error, "socketError", None) or error
    code = getattr(cause, "errno", None)
    reason = getattr(cause, "strerror", None) or str(cause).strip() or type(cause).__name__
    variable = spec.variable
    if code == errno.EADDRNOTAVAIL:
        reason += " (no such address on this host)"
        if variable == "SMTP_PORT":
            variable = "SMTP_LISTEN_ADDR"
    elif code == errno.EACCES and 0 < spec.port < 1024:
        reason += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    where = spec.address
    if spec.variable == "SMTP_PORT":
        text = f"cannot listen on {where}: {reason}"
    else:
        text = f"cannot listen on {where} ({spec.description}): {reason}"
    return ConfigError(variable, text)
