"""
A real HAProxy (Debian's C{haproxy}) in front of a test server, on loopback
ports, for the PROXY-protocol integration tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from tests.support.server import freePort, waitForPort

__all__ = ["Frontend", "HAProxy", "startHAProxy"]


@dataclass(frozen=True)
class Frontend:
    """
    One TCP frontend: HAProxy listens on C{port} and forwards to
    C{127.0.0.1:backendPort} with a PROXY header of C{version} (1 or 2).
    """

    name: str
    port: int
    backendPort: int
    version: int


class HAProxy:
    """
    A running HAProxy process.
    """

    def __init__(self, process: subprocess.Popen, configPath: str, frontends: list[Frontend]):
        self.process = process
        self.configPath = configPath
        self.frontends = {f.name: f for f in frontends}

    def stop(self) -> None:
        """
        Stop it (and wait, bounded).
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _config(frontends: list[Frontend]) -> str:
    lines = [
        "global",
        "    maxconn 200",
        "defaults",
        "    mode tcp",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
    ]
    for frontend in frontends:
        option = "send-proxy" if frontend.version == 1 else "send-proxy-v2"
        lines += [
            f"frontend {frontend.name}",
            f"    bind 127.0.0.1:{frontend.port}",
            f"    default_backend {frontend.name}_backend",
            f"backend {frontend.name}_backend",
            f"    server gopherpost 127.0.0.1:{frontend.backendPort} {option}",
        ]
    return "\n".join(lines) + "\n"


def startHAProxy(testCase, directory: str, routes: list[tuple[str, int, int]]) -> HAProxy:
    """
    Start HAProxy with one frontend per C{(name, backendPort, version)};
    stopped at cleanup.  Blocks until every frontend accepts (call it from a
    thread, or before the reactor is needed).

    @raise AssertionError: HAProxy is not installed or does not start (a
        failing test: C{.ci/run} installs it).
    """
    binary = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None
    )
    if binary is None:
        raise AssertionError(
            "haproxy is not installed (apt-get install haproxy; .ci/run installs it)"
        )
    frontends = [Frontend(name, freePort(), backend, version) for name, backend, version in routes]
    os.makedirs(directory, exist_ok=True)
    configPath = os.path.join(directory, "haproxy.cfg")
    with open(configPath, "w") as f:
        f.write(_config(frontends))
    check = subprocess.run([binary, "-c", "-f", configPath], capture_output=True, timeout=30)
    if check.returncode != 0:
        raise AssertionError(f"haproxy -c rejects {configPath}: {check.stderr.decode()}")
    process = subprocess.Popen(
        [binary, "-db", "-f", configPath],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxy = HAProxy(process, configPath, frontends)
    testCase.addCleanup(proxy.stop)
    deadline = time.monotonic() + 30
    for frontend in frontends:
        try:
            waitForPort(frontend.port, deadline)
        except OSError:
            raise AssertionError(
                f"haproxy did not listen on 127.0.0.1:{frontend.port} within 30 s"
            ) from None
    return proxy
