"""
Running the Node scripts of tests/web (a real Mailpit client, Playwright
driving Debian's Chromium) from trial tests.

The npm packages come from C{tests/web/npm-install.sh} (CI runs it).  When
they are missing, a test fails saying so; it skips only inside the Debian
package build (pybuild), whose build dependencies have neither Node nor
Chromium.
"""

from __future__ import annotations

import os
import shutil
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SkipTest

from tests.support.server import REPOSITORY

__all__ = ["WEB_TESTS", "NodeResult", "requireNode", "runNode"]

#: Where the Node scripts and their node_modules live.
WEB_TESTS = os.path.join(REPOSITORY, "tests", "web")
CHROMIUM = "/usr/bin/chromium"


def requireNode(packages: tuple[str, ...] = ("mailpit-api",), browser: bool = False) -> str:
    """
    The path of C{node}; fail (or skip in a Debian package build) when it,
    the npm packages or Chromium are missing.
    """
    problems = []
    node = shutil.which("node")
    if node is None:
        problems.append("node is not installed (apt-get install nodejs npm)")
    for package in packages:
        if not os.path.isdir(os.path.join(WEB_TESTS, "node_modules", package)):
            problems.append(f"npm package {package} is missing: run tests/web/npm-install.sh")
    if browser and not os.access(CHROMIUM, os.X_OK):
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    if problems:
        if "PYBUILD_NAME" in os.environ:
            raise SkipTest("Debian package build: " + "; ".join(problems))
        raise AssertionError("; ".join(problems))
    assert node is not None
    return node


class NodeResult:
    """
    What a script printed and how it ended.
    """

    def __init__(self, out: bytes, err: bytes, status: int | None) -> None:
        self.out = out
        self.err = err
        self.status = status


class _Collect(ProcessProtocol):
    def __init__(self, timeout: float) -> None:
        self.out = b""
        self.err = b""
        self.done: Deferred = Deferred()
        self._killer: Any = reactor.callLater(timeout, self._kill)

    def _kill(self) -> None:
        self._killer = None
        self.err += b"\n(killed: the script ran too long)"
        try:
            self.transport.signalProcess(signal.SIGKILL)  # type: ignore[union-attr]
        except Exception:
            pass

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        if self._killer is not None:
            self._killer.cancel()
        self.done.callback(NodeResult(self.out, self.err, getattr(reason.value, "exitCode", None)))


def runNode(node: str, script: str, *args: str, timeout: float = 120.0) -> Deferred:
    """
    Run C{tests/web/<script>} with C{args}; fires with a L{NodeResult}.
    """
    protocol = _Collect(timeout)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    reactor.spawnProcess(
        protocol, node, [node, os.path.join(WEB_TESTS, script), *args], env=env, path=WEB_TESTS
    )
    return protocol.done
