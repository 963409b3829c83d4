"""
Running a whole GopherPost server for integration tests: in this process
(wired by L{gopherpost.tap.makeService}) or as a real C{twistd} process.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from twisted.internet import reactor

from gopherpost.tap import Options, makeService
from gopherpost.wiring import GopherPostService

__all__ = [
    "REPOSITORY",
    "freePort",
    "serverEnvironment",
    "startInProcess",
    "TwistdProcess",
    "waitForPort",
]

#: The checkout's root (holds gopherpost/ and twisted/plugins/).
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: A loopback port where nothing answers DNS: tests never reach a real resolver.
NO_DNS = "127.0.0.1:9"


def freePort(host: str = "127.0.0.1") -> int:
    """
    A TCP port that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serverEnvironment(queuePath: str, port: int, **overrides: str) -> dict[str, str]:
    """
    C{SMTP_*} variables for a test server on 127.0.0.1.
    """
    environ = {
        "SMTP_PORT": str(port),
        "SMTP_LISTEN_ADDR": "127.0.0.1",
        "SMTP_HOSTNAME": "mx.gopherpost.test",
        "SMTP_LOCAL_DOMAINS": "gopherpost.test",
        "SMTP_ALLOW_NETWORKS": "127.0.0.1/32",
        "SMTP_QUEUE_PATH": queuePath,
        "SMTP_HEALTH_DISABLE": "true",
        "SMTP_DNS_SERVERS": NO_DNS,
        "SMTP_TLS_DISABLE": "true",
        "SMTP_WORKERS": "1",
    }
    environ.update(overrides)
    return environ


def startInProcess(testCase, environ: dict[str, str]) -> GopherPostService:
    """
    Build and start the service in this process; stopped at cleanup.
    """
    service = makeService(Options(), environ=environ, reactor=reactor)
    service.startService()
    testCase.addCleanup(service.stopService)
    return service


def waitForPort(port: int, deadline: float, host: str = "127.0.0.1") -> None:
    """
    Block (in a thread, never the reactor's) until C{port} accepts
    connections or C{deadline} (a C{time.monotonic()} value) passes.
    """
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class TwistdProcess:
    """
    C{twistd -n gopherpost} as a child process, with only the given
    environment (plus C{PATH} and C{PYTHONPATH} for this checkout).
    """

    def __init__(
        self,
        environ: dict[str, str],
        cwd: str | None = None,
        socketActivation: Sequence[tuple[str, int, str]] = (),
    ) -> None:
        """
        @param socketActivation: C{(host, port, name)} of sockets that
            C{systemd-socket-activate} (Debian's systemd package) binds and
            passes, as systemd would; the process starts at the first
            connection to one of them.
        """
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": REPOSITORY}
        env.update(environ)
        self.args: list[str] = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "--nodaemon",
            "--pidfile=",
            "gopherpost",
        ]
        if socketActivation:
            activator = shutil.which("systemd-socket-activate")
            if activator is None:
                raise AssertionError(
                    "systemd-socket-activate is missing (Debian's systemd package; "
                    ".ci/run installs it)"
                )
            prefix = [activator]
            for host, port, _ in socketActivation:
                prefix.append(f"--listen={host}:{port}")
            names = [name for _, _, name in socketActivation]
            if all(names):
                prefix.append("--fdname=" + ":".join(names))
            # It passes only the variables it is told to.
            prefix += [f"--setenv={key}={value}" for key, value in env.items()]
            self.args = prefix + self.args
        self.process = subprocess.Popen(
            self.args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own process group: a test can kill it with its workers.
            start_new_session=True,
        )

    def finish(self, timeout: float = 60) -> tuple[int, bytes, bytes]:
        """
        Wait for the process to end (blocking: call from a thread).
        """
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err

    def killGroup(self) -> None:
        """
        SIGKILL the process and its workers at once, like a crash.
        """
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """
        Make sure the process and its workers are gone.
        """
        self.killGroup()
        self.process.communicate(timeout=30)
