"""
Memory per session under abuse: does a GopherPost server stay bounded, and
does it still serve a new client fast, while clients misbehave?

Starts C{twistd -n gopherpost} from this checkout on a loopback port (STARTTLS
on, a short C{SMTP_COMMAND_TIMEOUT}), then runs each attack in turn:

  - C{never-read}: C{--readers} clients pipeline NOOP/RSET as fast as they
    can and never read a reply (issue 12 item 2: 4 such clients used to grow
    the server by 2.3 MB per MB sent);
  - C{slowloris}: C{--slow} connections each send one octet of a command
    every few seconds for over two command timeouts (item 3: they used to
    live for ever; C{openWhileTrickling} counts those still open);
  - C{silent-tls}: C{--silent} connections say EHLO and STARTTLS, then send
    half a ClientHello and nothing more (item 1).

For each attack it prints one JSON line: the server's RSS before, at the
peak and after (KiB), what the attackers sent, how many of their
connections the server still held after twice the command timeout, and the
median and worst time for a new, well-behaved client to get its banner and
EHLO reply meanwhile.  Standard library only (plus C{bench/procfs.py}); run
from the checkout's root, e.g. C{python bench/memory.py}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procfs  # noqa: E402

__all__ = ["main"]

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss(pid: int) -> int:
    rss, _ = procfs.memory(procfs.tree(pid))
    return rss // 1024


def _probe(port: int) -> float:
    """
    Seconds for a new client to get the banner and the EHLO reply.
    """
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(4096)
        sock.sendall(b"EHLO probe.bench.test\r\n")
        while not data.endswith(b"250 HELP\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        sock.sendall(b"QUIT\r\n")
    return time.monotonic() - started


def _openHeld(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            break
        socks.append(sock)
    return socks


def _stillOpen(socks: list[socket.socket]) -> int:
    """
    How many of C{socks} the server has not closed (EOF or reset).
    """
    open_ = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    return open_


def neverRead(port: int, args: argparse.Namespace) -> tuple[dict[str, Any], list[socket.socket]]:
    socks = _openHeld(port, args.readers)
    sent = [0] * len(socks)
    stop = threading.Event()

    def pump(i: int, sock: socket.socket) -> None:
        pair = b"NOOP\r\nRSET\r\n"
        chunk = pair * 5000
        sock.setblocking(False)
        while not stop.is_set() and sent[i] < args.per_reader_mb * 1024 * 1024:
            try:
                # Go on from where a partial send stopped: whole commands.
                sent[i] += sock.send(chunk[sent[i] % len(pair) :])
            except BlockingIOError:
                select.select([], [sock], [], 0.2)
            except OSError:
                return

    threads = [threading.Thread(target=pump, args=(i, s)) for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    return {"clients": len(socks), "sentMB": round(sum(sent) / 2**20, 1)}, socks


def slowloris(port: int, args: argparse.Namespace) -> tuple[dict[str, Any], list[socket.socket]]:
    socks = _openHeld(port, args.slow)
    # Trickle for longer than two command timeouts: a per-command limit
    # ends these sessions, an idle timer does not.
    deadline = time.monotonic() + max(args.seconds, 2 * args.timeout + 3)
    command = b"NOOP"
    step = 0
    while time.monotonic() < deadline:
        for sock in socks:
            try:
                sock.send(command[step % len(command) : step % len(command) + 1])
            except OSError:
                pass
        step += 1
        time.sleep(min(3.0, args.timeout / 3))
    return {"connections": len(socks), "openWhileTrickling": _stillOpen(socks)}, socks


def silentTLS(port: int, args: argparse.Namespace) -> tuple[dict[str, Any], list[socket.socket]]:
    socks = _openHeld(port, args.silent)
    for sock in socks:
        try:
            sock.recv(4096)
            sock.sendall(b"EHLO silent.bench.test\r\nSTARTTLS\r\n")
        except OSError:
            pass
    time.sleep(1)
    for sock in socks:
        try:
            sock.recv(65536)
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        except OSError:
            pass
    time.sleep(args.seconds)
    return {"connections": len(socks)}, socks


def _attack(
    name: str,
    run: Callable[[int, argparse.Namespace], tuple[dict[str, Any], list[socket.socket]]],
    pid: int,
    port: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    before = _rss(pid)
    sampler = procfs.PeakSampler(pid).start()
    probes: list[float] = []
    stop = threading.Event()

    def probing() -> None:
        while not stop.is_set():
            try:
                probes.append(_probe(port))
            except OSError:
                probes.append(float("inf"))
            stop.wait(1.0)

    prober = threading.Thread(target=probing)
    prober.start()
    result, socks = run(port, args)
    # A timed-out client that does not read is aborted CLOSE_GRACE (10 s)
    # after its 421.
    time.sleep(2 * args.timeout + 12)
    held = _stillOpen(socks)
    stop.set()
    prober.join()
    peak = sampler.stop()
    for sock in socks:
        sock.close()
    time.sleep(1)
    finite = [p for p in probes if p != float("inf")]
    return {
        "attack": name,
        **result,
        "stillOpenAfterTimeouts": held,
        "rssKiB": {"before": before, "peak": peak["peak_rss"] // 1024, "after": _rss(pid)},
        "newSessionMs": {
            "median": round(statistics.median(finite) * 1000, 1) if finite else None,
            "worst": round(max(finite) * 1000, 1) if finite else None,
            "failed": len(probes) - len(finite),
        },
    }


def main(argv: list[str] | None = None) -> int:
    """
    Run the attacks; see the module docstring.
    """
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attacks", default="never-read,slowloris,silent-tls")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--per-reader-mb", type=float, default=10.0)
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--silent", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each attack")
    parser.add_argument("--timeout", type=float, default=10.0, help="SMTP_COMMAND_TIMEOUT")
    parser.add_argument("--tree", default=REPOSITORY, help="the GopherPost checkout to run")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    root = tempfile.mkdtemp(prefix="gopherpost-memory-")
    port = _freePort()
    env = dict(
        os.environ,
        PYTHONPATH=args.tree,
        SMTP_PORT=str(port),
        SMTP_LISTEN_ADDR="127.0.0.1",
        SMTP_HOSTNAME="mx.bench.test",
        SMTP_ALLOW_NETWORKS="127.0.0.0/8",
        SMTP_QUEUE_PATH=os.path.join(root, "spool"),
        SMTP_HEALTH_DISABLE="true",
        SMTP_DNS_SERVERS="127.0.0.1:9",
        SMTP_COMMAND_TIMEOUT=str(args.timeout),
        SMTP_MAX_CONNECTIONS="10000",
        SMTP_MAX_CONNECTIONS_PER_IP="10000",
        SMTP_TLS_DISABLE="false",
    )
    log = open(os.path.join(root, "twistd.log"), "wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "gopherpost",
        ],
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _probe(port)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"the server did not start; see {log.name}") from None
                time.sleep(0.2)
        attacks = {"never-read": neverRead, "slowloris": slowloris, "silent-tls": silentTLS}
        random.seed(1)
        for name in args.attacks.split(","):
            print(json.dumps(_attack(name, attacks[name], server.pid, port, args)), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    with open(log.name, "rb") as f:
        if b"Traceback" in f.read():
            print(json.dumps({"error": f"traceback in the server's log: {log.name}"}))
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
