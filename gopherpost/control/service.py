# -*- test-case-name: tests.test_control_service -*-
"""
The control socket of a running server: C{<spool>/.gopherpost/control.sock}.

The socket is mode 0660 and its directory (the spool's state directory)
0710, so only the server's user, its group (Debian: C{gopherpost}) and
root can connect: connecting is the permission to steer the queue.

Only one server may run on a spool (two would write the same relay state
files): at start-up, a socket that answers means another server is
running there, and start-up ends with one line saying so; a socket that
does not answer is what a killed server left, and is replaced.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from gopherpost.config import ConfigError
from gopherpost.control.protocol import ControlFactory
from gopherpost.control.registry import CommandRegistry

__all__ = [
    "SOCKET_NAME",
    "SOCKET_MODE",
    "DIRECTORY_MODE",
    "MAX_SOCKET_PATH",
    "controlSocketPath",
    "checkNoOtherServer",
    "ControlService",
]

_log = Logger()

#: The socket's name in the spool's state directory.
SOCKET_NAME = "control.sock"
#: Its mode: the server's user and group may connect.
SOCKET_MODE = 0o660
#: The state directory's mode: the group may enter (to reach the socket)
#: but not list it.
DIRECTORY_MODE = 0o710
#: The longest path a UNIX socket can have (Linux: 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


def controlSocketPath(stateDirectory: str) -> str:
    """
    The control socket of the spool whose state directory is
    C{stateDirectory}.
    """
    return os.path.join(stateDirectory, SOCKET_NAME)


def _answers(path: str) -> bool:
    """
    Whether a server listens on the UNIX socket C{path} (blocking, local,
    at once).
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def checkNoOtherServer(stateDirectory: str) -> None:
    """
    Make sure no other server runs on this spool, and remove the socket a
    killed one left.

    @raise ConfigError: naming C{SMTP_QUEUE_PATH}, when another server
        answers on the control socket.
    """
    path = controlSocketPath(stateDirectory)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH or not os.path.exists(path):
        return
    if _answers(path):
        raise ConfigError(
            "SMTP_QUEUE_PATH",
            f"another GopherPost server is running on this spool (it answers on {path}); "
            "stop it first",
        )
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class ControlService(Service):
    """
    Listens on the control socket while the server runs.

    The socket is made in L{startService}, after privileges are dropped, so
    that it belongs to the server's user.  A socket that cannot be made is
    one warning: mail goes on, C{gopherpostctl} actions do not.

    @param registry: the commands to offer.
    @param stateDirectory: the spool's state directory.
    @param reactor: provides C{listenUNIX}.
    """

    name = "control"

    def __init__(self, registry: CommandRegistry, stateDirectory: str, reactor: Any) -> None:
        self.registry = registry
        self.stateDirectory = stateDirectory
        self.path = controlSocketPath(stateDirectory)
        self._reactor = reactor
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        """
        Listen on the control socket.
        """
        Service.startService(self)
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            _log.warn(
                "No control socket: {path} is longer than a UNIX socket's path may be "
                "({limit} bytes); gopherpostctl cannot reach this server (use a shorter "
                "SMTP_QUEUE_PATH)",
                path=self.path,
                limit=MAX_SOCKET_PATH,
            )
            return
        try:
            os.chmod(self.stateDirectory, DIRECTORY_MODE)
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.port = self._reactor.listenUNIX(
                self.path, ControlFactory(self.registry), mode=SOCKET_MODE
            )
        except Exception as e:
            number = getattr(e, "errno", None) or getattr(
                getattr(e, "socketError", None), "errno", None
            )
            reason = os.strerror(number) if number else str(e)
            _log.warn(
                "No control socket at {path}: {reason}; gopherpostctl cannot reach this server",
                path=self.path,
                reason=reason,
            )
            return
        _log.info("Control socket: {path}", path=self.path)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening (the socket file is removed).
        """
        Service.stopService(self)
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)
