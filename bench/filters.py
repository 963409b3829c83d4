"""
What content filtering costs (issue 21): messages per second through a
whole GopherPost server (C{twistd -n gopherpost}, as a user runs it) at 20
concurrent sessions, with rspamd off, rspamd over HTTP (C{SMTP_RSPAMD_URL},
/checkv2) and through rspamd's milter port (C{SMTP_MILTERS}), in one run,
the modes interleaved round by round.

    python3 bench/filters.py                  # 3 rounds of 1,000 1 KiB messages
    python3 bench/filters.py --messages 300 --rounds 1 --size 102400
    python3 bench/filters.py --stage          # the end-of-data stage alone

Run from the repository root (as root: rspamd is the Debian package,
started on loopback ports as the tests start it, tests/filters/services.py,
its DNS going to a stub that answers NXDOMAIN).  The client is Postfix's
C{smtp-source} (C{postfix} package), one message per connection, from
127.0.0.1 without relay permission (so the filters' default scope covers
it); each server gets a fresh spool under C{--work} (default: a temporary
directory) and is stopped after its round.  Per mode it prints msgs/s, and
the CPU seconds per message spent by GopherPost's processes and by
rspamd's: rspamd's own cost dominates.

C{--stage} measures only what the filters add at the end of data (their
policies driven directly, no SMTP session), as before the filters were on
the chain.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402

from gopherpost.config import MilterSpec  # noqa: E402
from gopherpost.filters.metrics import FilterMetrics  # noqa: E402
from gopherpost.filters.milter.client import MilterClient  # noqa: E402
from gopherpost.filters.policies import MilterPolicy, ScannerPolicy  # noqa: E402
from gopherpost.filters.rspamd import RspamdClient  # noqa: E402
from tests.filters import services  # noqa: E402
from tests.support.filterchain import runSession  # noqa: E402
from tests.support.filters import FakeContext, FakeMessage, FakeTransaction  # noqa: E402
from tests.support.server import (  # noqa: E402
    REPOSITORY,
    freePort,
    serverEnvironment,
    waitForPort,
)


def makeMessage(size: int, number: int) -> FakeMessage:
    section = (
        b"From: Bench <bench@example.test>\r\nTo: rcpt@example.test\r\n"
        b"Subject: bench message %d\r\nDate: Tue, 01 Dec 2026 12:00:00 +0000\r\n"
        b"Message-ID: <bench-%d@example.test>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n" % (number, number)
    )
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return FakeMessage(section, body, queueId=f"BENCH{number:06d}")


def cpuSeconds(pids: list[int]) -> float:
    """
    User + system CPU seconds of processes (and their reaped children).
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / ticks
    return total


def processTree(root: int) -> list[int]:
    pids = [root]
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError):
                continue
            if parent == root:
                pids.append(int(name))
    return pids


@defer.inlineCallbacks
def measure(
    reactor: Any, policies: Callable[[], list[Any]], messages: int, size: int, sessions: int
) -> Generator[Deferred[Any], Any, dict[str, float]]:
    latencies: list[float] = []
    counter = iter(range(messages))

    @defer.inlineCallbacks
    def worker() -> Generator[Deferred[Any], Any, None]:
        for number in counter:
            msg = makeMessage(size, number)
            started = time.perf_counter()
            replies = yield runSession(policies(), FakeContext(), FakeTransaction(), msg)
            latencies.append(time.perf_counter() - started)
            reply = replies.get("message")
            if reply is not None and reply.code >= 400:
                raise RuntimeError(f"message refused: {reply}")

    started = time.perf_counter()
    yield defer.gatherResults([worker() for _ in range(sessions)], consumeErrors=True)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "msgs/s": messages / elapsed,
        "p50 ms": 1000 * latencies[len(latencies) // 2],
        "p99 ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
    }


@defer.inlineCallbacks
def stageMain(reactor: Any, options: argparse.Namespace) -> Generator[Deferred[Any], Any, None]:
    rspamd = yield services.rspamd()
    rspamdPids = processTree(rspamd.process.pid)
    metrics = FilterMetrics()
    http = RspamdClient(reactor, rspamd.url, 20.0)
    scanner = ScannerPolicy(http, "tempfail", "all", metrics, reactor)
    spec = MilterSpec(f"inet:127.0.0.1:{rspamd.milter}", "127.0.0.1", rspamd.milter, name="rspamd")
    milter = MilterPolicy([MilterClient(reactor, spec)], "tempfail", metrics, reactor)
    modes: dict[str, Callable[[], list[Any]]] = {
        "off": lambda: [],
        "rspamd HTTP": lambda: [scanner],
        "rspamd milter": lambda: [milter],
    }
    # Warm up: rspamd's first scans load maps and caches.
    for make in modes.values():
        yield measure(reactor, make, 40, options.size, options.sessions)
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    order = list(modes)
    for round in range(options.rounds):
        for mode in order[round % len(order) :] + order[: round % len(order)]:
            ours, theirs = cpuSeconds([os.getpid()]), cpuSeconds(rspamdPids)
            figures = yield measure(
                reactor, modes[mode], options.messages, options.size, options.sessions
            )
            figures["our CPU ms/msg"] = 1000 * (cpuSeconds([os.getpid()]) - ours) / options.messages
            figures["rspamd CPU ms/msg"] = (
                1000 * (cpuSeconds(rspamdPids) - theirs) / options.messages
            )
            results[mode].append(figures)
            print(f"round {round + 1} {mode}: {figures['msgs/s']:.0f} msgs/s", file=sys.stderr)
    yield http.close()
    columns = ["msgs/s", "p50 ms", "p99 ms", "our CPU ms/msg", "rspamd CPU ms/msg"]
    print(
        f"\n{options.messages} messages of {options.size} octets, {options.sessions} sessions, "
        f"medians of {options.rounds} interleaved rounds"
    )
    print(f"{'mode':<16}" + "".join(f"{c:>19}" for c in columns))
    for mode, runs in results.items():
        medians = [statistics.median(r[c] for r in runs) for c in columns]
        print(f"{mode:<16}" + "".join(f"{v:>19.2f}" for v in medians))
    off = statistics.median(r["msgs/s"] for r in results["off"])
    for mode in ("rspamd HTTP", "rspamd milter"):
        on = statistics.median(r["msgs/s"] for r in results[mode])
        print(f"{mode}: {on / off:.3f} of the throughput without it")


def storedCount(spool: str) -> int:
    count = 0
    for directory in os.listdir(spool):
        if directory[:4].isdigit():
            count += sum(n.endswith(".eml") for n in os.listdir(os.path.join(spool, directory)))
    return count


def smtpSource(port: int, sessions: int, messages: int, size: int) -> float:
    """
    Send C{messages} with C{smtp-source}; the wall seconds it took.
    """
    args = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    args += ["-M", "client.bench.test", "-f", "alice@client.test", "-t", "bob@gopherpost.test"]
    started = time.monotonic()
    subprocess.run(
        [*args, f"127.0.0.1:{port}"],
        check=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def serverRound(
    work: str, settings: dict[str, str], options: argparse.Namespace, rspamdPids: list[int]
) -> dict[str, float]:
    """
    One measured run against a fresh server (blocking: call in a thread).
    """
    spool = tempfile.mkdtemp(dir=work)
    port = freePort()
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": REPOSITORY}
    environ.update(serverEnvironment(spool, port, SMTP_RELAY_NETWORKS="192.0.2.0/24"))
    environ.update(settings)
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    command += ["--nodaemon", "--pidfile=", "gopherpost"]
    with open(spool + ".log", "wb") as log:
        server = subprocess.Popen(
            command,
            env=environ,
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        waitForPort(port, time.monotonic() + 60)
        warm = 40
        smtpSource(port, options.sessions, warm, options.size)
        ours, theirs = cpuSeconds(processTree(server.pid)), cpuSeconds(rspamdPids)
        seconds = smtpSource(port, options.sessions, options.messages, options.size)
        ourCPU = cpuSeconds(processTree(server.pid)) - ours
        rspamdCPU = cpuSeconds(rspamdPids) - theirs
        stored = storedCount(spool) - warm
        if stored != options.messages:
            raise RuntimeError(f"{stored} of {options.messages} stored; see {spool}.log")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    shutil.rmtree(spool)
    os.unlink(spool + ".log")
    return {
        "msgs/s": options.messages / seconds,
        "GopherPost CPU ms/msg": 1000 * ourCPU / options.messages,
        "rspamd CPU ms/msg": 1000 * rspamdCPU / options.messages,
    }


@defer.inlineCallbacks
def main(reactor: Any, options: argparse.Namespace) -> Generator[Deferred[Any], Any, None]:
    if options.stage:
        yield stageMain(reactor, options)
        return
    if shutil.which("smtp-source") is None:
        raise SystemExit("bench/filters.py needs smtp-source (apt install postfix)")
    rspamd = yield services.rspamd()
    rspamdPids = processTree(rspamd.process.pid)
    modes = {
        "off": {},
        "rspamd HTTP": {"SMTP_RSPAMD_URL": rspamd.url},
        "rspamd milter": {"SMTP_MILTERS": f"inet:127.0.0.1:{rspamd.milter};name=rspamd"},
    }
    work = options.work or tempfile.mkdtemp(prefix="gopherpost-bench-filters.")
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    order = list(modes)
    for round in range(options.rounds):
        for mode in order[round % len(order) :] + order[: round % len(order)]:
            figures = yield deferToThread(serverRound, work, modes[mode], options, rspamdPids)
            results[mode].append(figures)
            print(f"round {round + 1} {mode}: {figures['msgs/s']:.0f} msgs/s", file=sys.stderr)
    if not options.work:
        shutil.rmtree(work, ignore_errors=True)
    columns = ["msgs/s", "GopherPost CPU ms/msg", "rspamd CPU ms/msg"]
    print(
        f"\n{options.messages} messages of {options.size} octets, {options.sessions} sessions "
        f"(smtp-source), whole server, medians of {options.rounds} interleaved rounds"
    )
    print(f"{'mode':<16}" + "".join(f"{c:>23}" for c in columns))
    for mode, runs in results.items():
        medians = [statistics.median(r[c] for r in runs) for c in columns]
        print(f"{mode:<16}" + "".join(f"{v:>23.2f}" for v in medians))
    off = statistics.median(r["msgs/s"] for r in results["off"])
    for mode in ("rspamd HTTP", "rspamd milter"):
        on = statistics.median(r["msgs/s"] for r in results[mode])
        print(f"{mode}: {on / off:.3f} of the throughput without it")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", help="where the spools go (default: a temporary directory)")
    parser.add_argument(
        "--stage", action="store_true", help="the end-of-data stage alone, no SMTP server"
    )
    task.react(main, [parser.parse_args()])
