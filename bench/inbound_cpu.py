"""
CPU per message of the inbound path, in this process, without sockets.

Drives the SMTP server protocol that C{makeSMTPFactory} builds (the same
entry point on every version of the tree) over a L{StringTransport}, one
message per session as C{smtp-source} sends them (EHLO, MAIL, RCPT, DATA,
80-byte lines, QUIT; no pipelining), into a real L{Spool} on a tmpfs
directory whose thread work runs inline.  Prints one JSON line per size:
CPU microseconds per message (process time, median of C{--reps}).

Compare two trees by running this script with each on C{PYTHONPATH}::

    PYTHONPATH=/tmp/before python bench/inbound_cpu.py
    PYTHONPATH=. python bench/inbound_cpu.py

It measures the framing, session, policy and spool code on the reactor
thread; not the kernel's socket work, not fsync (tmpfs).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from gopherpost.config import Settings
from gopherpost.inbound.factory import makeSMTPFactory
from gopherpost.interfaces import IAuditLog
from gopherpost.spool import Spool

__all__ = ["main"]


@implementer(IAuditLog)
class _NullAudit:
    def emit(self, event: str, **fields: object) -> None:
        pass

    def subscribe(self, callback: object) -> Any:
        raise NotImplementedError()


def _body(size: int) -> bytes:
    line = b"x" * 78 + b"\r\n"
    head = b"From: a@bench.test\r\nTo: b@bench.test\r\nSubject: bench\r\n\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def _session(factory: Any, clock: Clock, body: bytes, chunk: int, port: int) -> None:
    # Queue ids are time-ordered: a new microsecond for every message.
    clock.advance(0.00001)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
    proto = factory.buildProtocol(transport.getPeer())
    proto.makeConnection(transport)
    for command in (b"EHLO client.bench.test\r\n", b"MAIL FROM:<a@bench.test>\r\n"):
        proto.dataReceived(command)
    proto.dataReceived(b"RCPT TO:<b@bench.test>\r\n")
    proto.dataReceived(b"DATA\r\n")
    data = body + b".\r\n"
    for i in range(0, len(data), chunk):
        proto.dataReceived(data[i : i + chunk])
    proto.dataReceived(b"QUIT\r\n")
    if b" queued as " not in transport.value():
        raise SystemExit(f"message not accepted: {transport.value()[-300:]!r}")
    proto.connectionLost(None)


def main(argv: list[str] | None = None) -> int:
    """
    Run the measurement; see the module docstring.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=4096, help="bytes per read in DATA")
    parser.add_argument("--sizes", default="1024,102400")
    parser.add_argument("--dir", default="/dev/shm")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="gp-inbound-cpu-", dir=args.dir)
    try:
        clock = Clock()
        clock.advance(time.time())
        settings = replace(
            Settings(),
            hostname="mx.bench.test",
            localDomains=("mx.bench.test", "bench.test"),
            allowNetworks=(ipaddress.ip_network("127.0.0.0/8"),),
            queuePath=root,
            tlsDisable=True,
            healthDisable=True,
            maxConnections=0,
            maxConnectionsPerIP=0,
        )
        spool = Spool(root, clock, runInThread=lambda f, *a: maybeDeferred(f, *a))
        spool.open()
        factory = makeSMTPFactory(settings, spool, _NullAudit(), None, clock, None)
        for size in (int(s) for s in args.sizes.split(",")):
            body = _body(size)
            results = []
            for _ in range(args.reps):
                for i in range(20):
                    _session(factory, clock, body, args.chunk, 1000 + i)
                started = time.process_time()
                for i in range(args.messages):
                    _session(factory, clock, body, args.chunk, 1000 + i % 50000)
                results.append((time.process_time() - started) / args.messages * 1e6)
                for name in spool.dateDirectories():
                    directory = os.path.join(root, name)
                    for entry in os.listdir(directory):
                        os.unlink(os.path.join(directory, entry))
            print(
                json.dumps(
                    {
                        "size": len(body),
                        "chunk": args.chunk,
                        "cpu_us_per_message": round(statistics.median(results), 1),
                        "runs": [round(r, 1) for r in results],
                    }
                ),
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
