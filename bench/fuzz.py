"""
Fuzz the inbound side for a while, bounded and seeded.

Two targets:

  - C{--target protocol} (default): the real protocol, session, policies
    and spool over a StringTransport with a Clock, in this process
    (L{tests.support.fuzzing}): thousands of dialogues a second, each in a
    random split, with its timeouts run out.
  - C{--target twistd}: a real C{twistd -n gopherpost} on a loopback port,
    fed dialogues over TCP (each write a segment of its own, a few
    connections at a time); its log is read for tracebacks at the end.

Both print a JSON summary (dialogues, octets, replies, findings) and exit
non-zero on any finding: a traceback, an invalid reply line, a session left
open, a stored message that is not clean.  Run from the checkout's root::

    python bench/fuzz.py --seconds 300 --seed 1
    python bench/fuzz.py --target twistd --seconds 120
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.fuzzing import (  # noqa: E402
    FuzzReport,
    checkReplies,
    dialogue,
    fuzz,
    mutate,
    randomDialogue,
)

__all__ = ["main"]


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _converse(port: int, data: bytes, rng: random.Random) -> bytes:
    """
    Send C{data} in random pieces, then read until the server closes (or
    goes quiet for a few seconds).
    """
    output = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(1, 8)))
        try:
            for a, b in zip([0, *cuts], [*cuts, len(data)]):
                if data[a:b]:
                    sock.sendall(data[a:b])
                    time.sleep(rng.choice([0, 0, 0.001]))
            sock.settimeout(3)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                output += chunk
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass
    return output


def _twistd(seconds: float, seed: int) -> FuzzReport:
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="gopherpost-fuzz-twistd-")
    port = _freePort()
    env = dict(
        os.environ,
        PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        SMTP_PORT=str(port),
        SMTP_LISTEN_ADDR="127.0.0.1",
        SMTP_HOSTNAME="mx.gopherpost.test",
        SMTP_LOCAL_DOMAINS="gopherpost.test",
        SMTP_ALLOW_NETWORKS="127.0.0.0/8",
        SMTP_QUEUE_PATH=os.path.join(root, "spool"),
        SMTP_HEALTH_DISABLE="true",
        SMTP_DNS_SERVERS="127.0.0.1:9",
        SMTP_COMMAND_TIMEOUT="3",
        SMTP_MAX_MESSAGE_SIZE="1M",
        SMTP_TLS_DISABLE="false",
    )
    log = open(os.path.join(root, "twistd.log"), "wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "gopherpost",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    report = FuzzReport()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("twistd did not start; see " + log.name) from None
                time.sleep(0.1)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            kind = rng.random()
            data = (
                dialogue(rng)
                if kind < 0.5
                else randomDialogue(rng)
                if kind < 0.7
                else mutate(rng, dialogue(rng))
            )
            output = _converse(port, data, rng)
            report.dialogues += 1
            report.octets += len(data)
            report.replies += output.count(b"\r\n")
            for problem in checkReplies(output):
                report.findings.append(f"{problem} (dialogue {report.dialogues}: {data[:200]!r})")
        report.seconds = time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
    with open(log.name, "rb") as f:
        text = f.read()
    if b"Traceback" in text:
        report.findings.append(f"traceback in the server's log ({log.name})")
    return report


def main(argv: list[str] | None = None) -> int:
    """
    Run the fuzzer; see the module docstring.
    """
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", choices=("protocol", "twistd"), default="protocol")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.target == "protocol":

        def progress(report: FuzzReport) -> None:
            print(
                f"  {report.dialogues} dialogues, {len(report.findings)} findings", file=sys.stderr
            )

        report = fuzz(args.seed, seconds=args.seconds, progress=progress)
    else:
        report = _twistd(args.seconds, args.seed)
    print(
        json.dumps(
            {
                "target": args.target,
                "seed": args.seed,
                "seconds": round(report.seconds, 1),
                "dialogues": report.dialogues,
                "octets": report.octets,
                "replies": report.replies,
                "messages": report.messages,
                "findings": report.findings[:20],
                "findingCount": len(report.findings),
            },
            indent=2,
        )
    )
    return 1 if report.findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
