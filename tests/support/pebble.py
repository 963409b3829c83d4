"""
Pebble (Debian's C{pebble}), Let's Encrypt's ACME test server, on loopback
ports for the ACME integration tests.

Each test starts its own Pebble with its own test CA (made afresh by Pebble
at every start), C{PEBBLE_VA_ALWAYS_VALID=0} (it really validates),
resolving names through the test's DNS server (C{-dnsserver}) and validating
HTTP-01 on the port the test's challenge listener uses (C{httpPort}).
Pebble's own HTTPS certificate comes from a test CA made here
(L{tests.support.certs}); the ACME client trusts it through
C{SMTP_ACME_DIRECTORY_CA}.

Typical use in a trial test::

    pebble = yield startPebble(self, self.mktemp(), dns.address, challengePort)
    settings: SMTP_ACME_DIRECTORY=pebble.directoryURL,
              SMTP_ACME_DIRECTORY_CA=pebble.caFile
    root = yield pebble.rootPEM()      # to verify what it issued
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Mapping
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from tests.support.certs import CertificateAuthority
from tests.support.server import freePort

__all__ = ["Pebble", "pebbleBinary", "startPebble"]

#: How long Pebble may take to start.
START_TIMEOUT = 30.0


def pebbleBinary() -> str:
    """
    The pebble executable.

    @raise AssertionError: it is not installed (a failing test: C{.ci/run}
        installs it through C{tests/acme/pebble.sh}).
    """
    found = shutil.which("pebble") or (
        "/usr/bin/pebble" if os.path.exists("/usr/bin/pebble") else None
    )
    if found is None:
        raise AssertionError(
            "pebble is not installed: apt-get install pebble (tests/acme/pebble.sh does it)"
        )
    return found


class _PebbleProtocol(ProcessProtocol):
    def __init__(self, logPath: str) -> None:
        self.output = b""
        self.log = open(logPath, "ab")
        self.listening: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.exited = False

    def outReceived(self, data: bytes) -> None:
        self.output += data
        self.log.write(data)
        self.log.flush()
        if b"ACME directory available at" in self.output and not self.listening.called:
            self.listening.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        self.log.close()
        if not self.listening.called:
            self.listening.errback(
                AssertionError(f"pebble exited at start-up: {self.output.decode(errors='replace')}")
            )
        self.ended.callback(None)


class Pebble:
    """
    A running Pebble.

    @ivar directoryURL: its ACME directory.
    @ivar caFile: the CA of its HTTPS certificate (for
        C{SMTP_ACME_DIRECTORY_CA}).
    @ivar httpPort: where it validates HTTP-01.
    @ivar environment: the C{PEBBLE_*} variables it runs with.
    """

    def __init__(
        self,
        protocol: _PebbleProtocol,
        transport: Any,
        port: int,
        managementPort: int,
        caFile: str,
        httpPort: int,
        environment: Mapping[str, str],
    ) -> None:
        self._protocol = protocol
        self._transport = transport
        self.port = port
        self.managementPort = managementPort
        self.directoryURL = f"https://127.0.0.1:{port}/dir"
        self.caFile = caFile
        self.httpPort = httpPort
        self.environment = dict(environment)
        self.certPath = ""
        self.keyPath = ""

    @property
    def output(self) -> str:
        """
        What Pebble has logged so far.
        """
        return self._protocol.output.decode(errors="replace")

    def rootPEM(self) -> defer.Deferred[bytes]:
        """
        The root certificate Pebble issues under (from its management
        interface), fetched in a thread.
        """
        import requests

        def fetch() -> bytes:
            url = f"https://127.0.0.1:{self.managementPort}/roots/0"
            response = requests.get(url, verify=self.caFile, timeout=10)
            response.raise_for_status()
            return response.content

        return threads.deferToThread(fetch)

    def stop(self) -> defer.Deferred[None]:
        """
        Stop it (SIGTERM, then SIGKILL after ten seconds) and wait.
        """
        if self._protocol.exited:
            return defer.succeed(None)
        try:
            self._transport.signalProcess("TERM")
        except ProcessExitedAlready:
            return defer.succeed(None)
        killer = reactor.callLater(10, self._kill)

        def ended(_: object) -> None:
            if killer.active():
                killer.cancel()

        return self._protocol.ended.addCallback(ended)

    def _kill(self) -> None:
        try:
            self._transport.signalProcess(signal.SIGKILL)
        except ProcessExitedAlready:
            pass


def _giveUp(listening: defer.Deferred[None]) -> None:
    if not listening.called:
        listening.errback(AssertionError(f"pebble did not start within {START_TIMEOUT:g} s"))


@defer.inlineCallbacks
def _waitForPort(port: int, timeout: float) -> Any:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=2)
    waited = 0.0
    while True:
        try:
            protocol = yield endpoint.connect(Factory.forProtocol(Protocol))
        except Exception:
            if waited >= timeout:
                raise AssertionError(f"pebble does not accept on 127.0.0.1:{port}") from None
            yield deferLater(reactor, 0.05, lambda: None)
            waited += 0.05
            continue
        protocol.transport.loseConnection()
        return


@defer.inlineCallbacks
def startPebble(
    testCase: Any,
    directory: str,
    dnsServer: tuple[str, int],
    httpPort: int,
    validity: int | None = None,
    environment: Mapping[str, str] | None = None,
    reuse: Pebble | None = None,
) -> Any:
    """
    Start a Pebble; it is stopped at cleanup.

    @param directory: for its configuration, certificates and log.
    @param dnsServer: C{(host, port)} of the DNS server it resolves names
        with.
    @param httpPort: the port it validates HTTP-01 on.
    @param validity: the lifetime of the certificates it issues, in
        seconds (default Pebble's five years).
    @param environment: C{PEBBLE_*} variables over the defaults
        (C{PEBBLE_VA_ALWAYS_VALID=0}, C{PEBBLE_VA_NOSLEEP=1},
        C{PEBBLE_WFE_NONCEREJECT=0}, C{PEBBLE_AUTHZREUSE=0}).
    @param reuse: a stopped Pebble whose ports and HTTPS certificate to
        reuse (the same directory URL, a new CA and new state behind it).
    @return: a L{Deferred} firing with the L{Pebble} once it accepts.
    """
    binary = pebbleBinary()
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    if reuse is None:
        ca = CertificateAuthority(os.path.join(directory, "https-ca"), "Pebble HTTPS Test CA")
        serving = ca.issue(["localhost", "127.0.0.1"], basename="pebble-https")
        caFile, certPath, keyPath = ca.certPath, serving.certPath, serving.keyPath
    else:
        caFile, certPath, keyPath = reuse.caFile, reuse.certPath, reuse.keyPath
    variables = {
        "PEBBLE_VA_ALWAYS_VALID": "0",
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
    }
    variables.update(environment or {})
    lastError: Exception | None = None
    for attempt in range(3):
        if reuse is None:
            port, managementPort = freePort(), freePort()
        else:
            port, managementPort = reuse.port, reuse.managementPort
        config: dict[str, Any] = {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{managementPort}",
            "certificate": certPath,
            "privateKey": keyPath,
            "httpPort": httpPort,
            "tlsPort": freePort(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if validity is not None:
            config["certificateValidityPeriod"] = validity
        configPath = os.path.join(directory, f"pebble-{attempt}.json")
        with open(configPath, "w") as f:
            json.dump({"pebble": config}, f)
        protocol = _PebbleProtocol(os.path.join(directory, "pebble.log"))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **variables}
        transport = reactor.spawnProcess(
            protocol,
            binary,
            [
                binary,
                "-config",
                configPath,
                "-dnsserver",
                f"{dnsServer[0]}:{dnsServer[1]}",
                "-strict",
                "false",
            ],
            env=env,
            path=directory,
            childFDs={0: "w", 1: "r", 2: "r"},
        )
        pebble = Pebble(protocol, transport, port, managementPort, caFile, httpPort, variables)
        pebble.certPath, pebble.keyPath = certPath, keyPath
        timeout = reactor.callLater(START_TIMEOUT, _giveUp, protocol.listening)
        try:
            yield protocol.listening
        except AssertionError as e:
            lastError = e
            yield pebble.stop()
            if "address already in use" in pebble.output and reuse is None:
                continue
            raise
        finally:
            if timeout.active():
                timeout.cancel()
        testCase.addCleanup(pebble.stop)
        yield _waitForPort(port, 10.0)
        return pebble
    assert lastError is not None
    raise lastError
