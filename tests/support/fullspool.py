# -*- test-case-name: tests.test_diskspace -*-
"""
A spool on a small file system that a test can fill up, behind GopherPost's
real probe endpoints: the child process of L{tests.test_diskspace}.

Run in a mount namespace of its own, where it may mount a tmpfs without
touching the host (as root or not)::

    unshare --user --map-root-user --mount python -m tests.support.fullspool DIR

It mounts a 4 MiB tmpfs with 400 inodes on C{DIR}, opens a spool there,
serves C{/livez}, C{/readyz} and C{/healthz} on 127.0.0.1 (any free port)
with the spool's L{Spool.isWritable} as the readiness check, and prints
C{port N}.  Then it obeys one command per line on its standard input and
answers each with one JSON line: C{{"ready": [ok, reason], "write": "ok" or
an errno name}} (C{write}: whether an 8 KiB file can still be written in the
spool's C{tmp/} directory).  Commands:

    check               nothing, just answer
    fill                fill the file system until ENOSPC
    release N           free N bytes of that
    empty               remove the filling
    inodes              create empty files until no inode is left
    uninodes            remove them
    readonly            remount the file system read-only
    readwrite           remount it read-write

It exits when its standard input closes, or after two minutes at most.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys

from twisted.internet import reactor, stdio
from twisted.internet.address import IPv4Address
from twisted.protocols.basic import LineReceiver

from gopherpost.audit import AuditLog
from gopherpost.config import Settings
from gopherpost.metrics import Metrics
from gopherpost.spool import Spool
from gopherpost.web import makeWebResource, makeWebService

SIZE = "4m"
INODES = "400"


def _errorName(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e))


class FullSpool:
    """
    The file system, the spool on it, and what the commands do.
    """

    def __init__(self, mountPoint: str) -> None:
        self.mountPoint = mountPoint
        self.fillPath = os.path.join(mountPoint, "fill")
        self.inodeDirectory = os.path.join(mountPoint, "inodes")
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SIZE},nr_inodes={INODES}", "tmpfs", mountPoint],
            check=True,
            capture_output=True,
        )
        self.spool = Spool(os.path.join(mountPoint, "spool"), reactor)
        self.spool.open()

    def fill(self) -> None:
        fd = os.open(self.fillPath, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 512, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
        finally:
            os.close(fd)

    def release(self, count: int) -> None:
        size = os.path.getsize(self.fillPath)
        os.truncate(self.fillPath, max(0, size - count))

    def empty(self) -> None:
        if os.path.exists(self.fillPath):
            os.unlink(self.fillPath)

    def inodes(self) -> None:
        os.makedirs(self.inodeDirectory, exist_ok=True)
        try:
            for i in range(100000):
                open(os.path.join(self.inodeDirectory, str(i)), "wb").close()
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise

    def uninodes(self) -> None:
        for name in os.listdir(self.inodeDirectory):
            os.unlink(os.path.join(self.inodeDirectory, name))

    def remount(self, mode: str) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,{mode}", self.mountPoint], check=True, capture_output=True
        )

    def probeWrite(self) -> str:
        path = os.path.join(self.spool.path, "tmp", "probe")
        try:
            with open(path, "wb") as f:
                f.write(b"x" * 8192)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            return _errorName(e)
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        return "ok"

    def run(self, command: str) -> dict[str, object]:
        verb, _, argument = command.partition(" ")
        if verb == "fill":
            self.fill()
        elif verb == "release":
            self.release(int(argument))
        elif verb == "empty":
            self.empty()
        elif verb == "inodes":
            self.inodes()
        elif verb == "uninodes":
            self.uninodes()
        elif verb == "readonly":
            self.remount("ro")
        elif verb == "readwrite":
            self.remount("rw")
        elif verb != "check":
            return {"error": f"unknown command {command!r}"}
        return {"ready": list(self.spool.isWritable()), "write": self.probeWrite()}


class Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, fullSpool: FullSpool) -> None:
        self.fullSpool = fullSpool

    def lineReceived(self, line: bytes) -> None:
        try:
            answer = self.fullSpool.run(line.decode("ascii").strip())
        except Exception as e:
            answer = {"error": f"{type(e).__name__}: {e}"}
        self.sendLine(json.dumps(answer).encode("ascii"))

    def connectionLost(self, reason: object = None) -> None:
        if reactor.running:
            reactor.stop()


def main(mountPoint: str) -> None:
    signal.alarm(120)  # never outlive a test that forgot us
    try:
        fullSpool = FullSpool(mountPoint)
    except (OSError, subprocess.CalledProcessError) as e:
        stderr = getattr(e, "stderr", b"") or b""
        print(f"error: cannot mount a tmpfs on {mountPoint}: {e} {stderr.decode().strip()}")
        sys.exit(1)
    settings = Settings(healthAddr="127.0.0.1", healthPort=0)
    audit = AuditLog(False, reactor)
    resource = makeWebResource(settings, audit, Metrics(reactor, audit), fullSpool.spool.isWritable)
    service = makeWebService(settings, reactor, resource)
    assert service is not None
    service.startService()
    [port] = service.ports
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    print(f"port {address.port}", flush=True)
    stdio.StandardIO(Commands(fullSpool))
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
