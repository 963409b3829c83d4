"""
A private redis-server on a loopback port for one test.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from typing import Any

from twisted.internet import defer, reactor, task

__all__ = ["RedisServer", "startRedis"]


def _freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """
    C{redis-server --port P --bind 127.0.0.1 --save ''}, without a config
    file, in a temporary directory.

    @ivar port: its port.
    """

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._directory = tempfile.mkdtemp(prefix="gopherpost-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @defer.inlineCallbacks
    def start(self, timeout: float = 10.0) -> Any:
        """
        Start it and wait (bounded) until it answers PING.

        @raise RuntimeError: when redis-server is missing or does not start.
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed (Debian: apt-get install redis-server); "
                "the Redis tests need it"
            )
        if not self.port:
            self.port = _freePort()
        self._process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._directory,
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(int(timeout / 0.05)):
            if _accepts(self.port):
                return
            if self._process.poll() is not None:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.stop()
        raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        """
        Kill it (as a crash would) and wait for it.
        """
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
        self._process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._directory, ignore_errors=True)


@defer.inlineCallbacks
def startRedis(testCase: Any) -> Any:
    """
    Start a L{RedisServer} for a test; it is stopped in cleanup.
    """
    server = RedisServer()
    testCase.addCleanup(server.cleanup)
    yield server.start()
    return server
