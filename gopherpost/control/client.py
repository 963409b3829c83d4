# -*- test-case-name: tests.test_control_client -*-
"""
The blocking client of the control socket, for C{gopherpostctl}: one
request, one response.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gopherpost.control.registry import ControlError

__all__ = ["ServerNotRunning", "ControlUnavailable", "call", "DEFAULT_TIMEOUT"]

#: Seconds to wait for the server's answer (a reload, a large queue list).
DEFAULT_TIMEOUT = 120.0
#: Bytes of one response at most (a listing of a very large queue).
MAX_RESPONSE = 512 * 1024 * 1024


class ServerNotRunning(Exception):
    """
    Nothing answers on the control socket.
    """


class ControlUnavailable(Exception):
    """
    The control socket exists but cannot be used (permissions, a broken
    answer, a timeout).
    """


def call(
    path: str,
    command: str,
    arguments: dict[str, Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """
    Ask the server listening on C{path} to run C{command}.

    @return: the command's result.
    @raise ServerNotRunning: no server listens there.
    @raise ControlUnavailable: the socket cannot be used.
    @raise ControlError: the server refused or failed the command.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ServerNotRunning(path) from None
        except PermissionError:
            raise ControlUnavailable(
                f"permission denied on {path}: run as root or as a member of the "
                "server's group (Debian: gopherpost)"
            ) from None
        except OSError as e:
            raise ControlUnavailable(f"cannot connect to {path}: {e.strerror or e}") from None
        request = {"command": command, "arguments": arguments or {}}
        try:
            sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
            line = _readLine(sock)
        except TimeoutError:
            raise ControlUnavailable(f"no answer from the server within {timeout:g} s") from None
        except OSError as e:
            raise ControlUnavailable(f"the server went away: {e.strerror or e}") from None
    finally:
        sock.close()
    try:
        response = json.loads(line.decode("utf-8"))
    except ValueError:
        raise ControlUnavailable("the server's answer is not JSON") from None
    if response.get("ok"):
        return response.get("result")
    error = response.get("error") or {}
    raise ControlError(str(error.get("code", "failed")), str(error.get("message", "failed")))


def _readLine(sock: socket.socket) -> bytes:
    chunks = []
    size = 0
    while True:
        chunk = sock.recv(256 * 1024)
        if not chunk:
            raise ControlUnavailable("the server closed the connection without answering")
        newline = chunk.find(b"\n")
        if newline >= 0:
            chunks.append(chunk[:newline])
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_RESPONSE:
            raise ControlUnavailable("the server's answer is too large")
