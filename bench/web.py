"""
The message index and the web API, measured (issue 17).

    python3 bench/web.py smtp [--messages 5000] [--rounds 3]
        SMTP messages/s at 20 sessions (1 KiB, smtp-source) with the index
        off and on, runs interleaved, each server on a fresh ext4 image:
        the goal is that the index costs at most 10%.  The "on" runs count
        the index worker's CPU (it is a child of the server) and wait until
        every message is indexed.
    python3 bench/web.py api [--messages 100000] [--requests 300]
        API latency (list pages, searches, message views) with that many
        stored messages: the goal is p95 under 100 ms.  Also prints how long
        the index took to build from the spool.

Run as root on a quiet machine (loop-mounted images, as bench/run does;
C{--no-images} uses plain directories for a quick check), from a checkout,
with a virtual environment that has GopherPost's dependencies (C{--venv},
default: this interpreter's).  Everything is on 127.0.0.1; every process
started is stopped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse

from zope.interface import implementer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procfs  # noqa: E402
from harness import smtpSource  # noqa: E402
from servers import LOCAL_RECIPIENT, Bench, GopherPost, freePort, waitPort  # noqa: E402

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPOSITORY)

from gopherpost.syncstrategy import ISyncStrategy  # noqa: E402

WORDS = (
    "invoice order shipping account password reset welcome newsletter report meeting "
    "agenda budget quarterly review release notes deploy alert warning error backup "
    "schedule holiday travel receipt payment subscription renewal confirm verify "
    "security update invitation reminder summary weekly monthly customer support"
).split()
DOMAINS = ("shop.test", "bank.test", "news.test", "corp.test", "travel.test", "social.test")


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S ") + message, file=sys.stderr, flush=True)


#: What one stored test message takes at most on its image: its C{.eml}
#: (under 2 KiB here) and C{.envelope} in a 4 KiB block each, its share of
#: the index (about 4 KiB with the full-text tables), and room for the
#: index's write-ahead log and the spool's temporary files.
IMAGE_BYTES_PER_MESSAGE = 16 * 1024
#: Inodes per message: the C{.envelope} and the C{.eml} (one per
#: recipient, hard links of one inode), and one to spare.
IMAGE_INODES_PER_MESSAGE = 3


def imageSize(messages: int) -> tuple[str, int]:
    """
    The size and inode count of an image that holds C{messages} test
    messages and their index: at least bench/run's 3 GiB, and mkfs's
    default ratio of one inode per 16 KiB gives too few inodes for 100,000
    small messages (two files each), so both grow with the count.

    @return: the size for C{fallocate -l} and the count for C{mkfs.ext4 -N}.
    """
    size = max(3 << 30, (1 << 30) + messages * IMAGE_BYTES_PER_MESSAGE)
    inodes = max(size // 16384, 65536 + messages * IMAGE_INODES_PER_MESSAGE)
    return str(size), inodes


def _server(
    bench: Bench, args: argparse.Namespace, name: str, messages: int, **overrides: str
) -> GopherPost:
    """
    A GopherPost on an image of its own (a directory with C{--no-images})
    with room for C{messages} messages.
    """
    if args.no_images:
        mount = os.path.join(bench.work, name + "-data")
        os.makedirs(mount, exist_ok=True)
    else:
        size, inodes = imageSize(messages)
        mount = bench.image(name, size, inodes)
    overrides.setdefault("PYTHONPATH", REPOSITORY)
    return GopherPost(bench, name, mount=mount, **overrides)


# -- SMTP throughput, index on and off --------------------------------------


def _indexed(port: int) -> int:
    """
    How many messages the index has (-1 while it is starting).
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/api/v1/messages?limit=1")
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            return -1
        return int(json.loads(body)["total"])
    finally:
        connection.close()


def _waitIndexed(port: int, expected: int, timeout: float = 600) -> float:
    started = time.monotonic()
    while _indexed(port) < expected:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the index did not reach {expected} messages")
        time.sleep(0.05)
    return time.monotonic() - started


def _waitIdle(server: GopherPost, timeout: float = 600) -> float:
    """
    Wait until the server's processes use less than 5% of a CPU over a
    second: the index worker's start-up (the index's integrity check, the
    spool's listing, the catch-up) is over.  The API answers during it,
    but it would share the two cores with the requests measured.

    @return: the seconds waited.
    """
    started = time.monotonic()
    used = procfs.cpuSeconds(procfs.tree(server.root()))
    while True:
        time.sleep(1.0)
        now = procfs.cpuSeconds(procfs.tree(server.root()))
        if now - used < 0.05:
            return time.monotonic() - started
        used = now
        if time.monotonic() - started > timeout:
            raise RuntimeError("the server did not settle after start-up")


def smtpBenchmark(bench: Bench, args: argparse.Namespace) -> dict:
    webPort = freePort()
    stored = args.messages * args.rounds
    off = _server(bench, args, "index-off", stored)
    on = _server(
        bench,
        args,
        "index-on",
        stored,
        SMTP_WEB_LISTEN=f"tcp:{webPort}:interface=127.0.0.1",
    )
    servers = [off, on]
    for server in servers:
        server.start()
    waitPort(webPort, 60)
    _waitIndexed(webPort, 0)
    runs: dict[str, list[dict]] = {"index-off": [], "index-on": []}
    for rep in range(args.rounds):
        order = servers if rep % 2 == 0 else list(reversed(servers))
        for server in order:
            root = server.root()
            cpuBefore = procfs.cpuSeconds(procfs.tree(root))
            storedBefore = server.stored()
            result = smtpSource(server, 20, args.messages, 1024, LOCAL_RECIPIENT, 600)
            seconds = result["seconds"]
            lag = 0.0
            if server is on:
                lag = _waitIndexed(webPort, storedBefore + args.messages)
            cpu = procfs.cpuSeconds(procfs.tree(root)) - cpuBefore
            record = {
                "round": rep,
                "status": result["status"],
                "msgs_per_s": round(args.messages / seconds, 1),
                "cpu_ms_per_msg": round(cpu * 1000 / args.messages, 3),
                "index_lag_s": round(lag, 2),
            }
            runs[server.name].append(record)
            log(f"{server.name} round {rep}: {record}")
    summary = {
        name: {
            "msgs_per_s": statistics.median(r["msgs_per_s"] for r in records),
            "cpu_ms_per_msg": statistics.median(r["cpu_ms_per_msg"] for r in records),
        }
        for name, records in runs.items()
    }
    ratio = summary["index-on"]["msgs_per_s"] / summary["index-off"]["msgs_per_s"]
    # Each round runs both servers one after the other: the ratio within a
    # round cancels the machine's slower drifts, which a ratio of medians
    # over the whole run does not (on a shared VM, rounds of the same
    # server differ by 2x).
    pairRatios = [
        on["msgs_per_s"] / off["msgs_per_s"]
        for off, on in zip(runs["index-off"], runs["index-on"], strict=True)
    ]
    pairRatio = statistics.median(pairRatios)
    print(f"SMTP 1 KiB x 20 sessions, {args.messages} messages, medians of {args.rounds}:")
    for name, values in summary.items():
        print(
            f"  {name:10s} {values['msgs_per_s']:8.1f} msgs/s  {values['cpu_ms_per_msg']:.3f} ms CPU/msg"
        )
    print(f"  index on / off, medians: {ratio:.3f}")
    print(
        f"  index on / off, median of the rounds' ratios: {pairRatio:.3f} (goal >= 0.90;"
        f" rounds {min(pairRatios):.2f}-{max(pairRatios):.2f})"
    )
    return {
        "runs": runs,
        "summary": summary,
        "ratio": ratio,
        "roundRatios": [round(r, 3) for r in pairRatios],
        "medianRoundRatio": pairRatio,
    }


# -- API latency with many messages ---------------------------------------------


def _message(i: int, rng: random.Random) -> tuple[bytes, str]:
    sender = f"{rng.choice(WORDS)}@{rng.choice(DOMAINS)}"
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) + f" #{i}"
    body = "\r\n".join(
        " ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(rng.randint(4, 16))
    )
    raw = (
        f"From: {sender}\r\nTo: user{i % 50}@bench.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{i}.{rng.getrandbits(32):x}@{sender.split('@')[1]}>\r\n"
        f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()
    return raw, sender


@implementer(ISyncStrategy)
class _NoSync:
    """
    A spool sync strategy that syncs nothing (L{populate} syncs once at
    the end).
    """

    name = "none"

    def sync(self, files: object, directories: object) -> None:
        pass


def populate(spoolPath: str, count: int) -> float:
    """
    Commit C{count} messages to a new spool (synchronously, as fast as the
    spool allows: real spool messages, written by L{Spool.store}, but
    without a sync per commit); return the seconds it took.
    """
    from twisted.internet.defer import maybeDeferred
    from twisted.internet.task import Clock

    from gopherpost.spool import Spool

    clock = Clock()
    clock.advance(time.time() - 30 * 86400)
    # Test data, not mail: one sync at the end instead of one per message.
    spool = Spool(
        spoolPath, clock, runInThread=lambda f, *a: maybeDeferred(f, *a), syncStrategy=_NoSync()
    )
    spool.open()
    rng = random.Random(17)
    started = time.monotonic()
    step = 30 * 86400 / count
    for i in range(count):
        raw, sender = _message(i, rng)
        spool.store(raw, sender, [(f"user{i % 50}@bench.test", True)])
        clock.advance(step)
        if i % 10000 == 0 and i:
            log(f"stored {i}")
    os.sync()
    return time.monotonic() - started


def buildIndex(spoolPath: str) -> float:
    from twisted.internet.task import Clock

    from gopherpost.index.indexer import Indexer, IndexPolicy, indexPath, runAll
    from gopherpost.spool import Spool

    spool = Spool(spoolPath, Clock())
    indexer = Indexer(spool, indexPath(os.path.join(spoolPath, ".gopherpost")), IndexPolicy())
    started = time.monotonic()
    indexer.open()
    added = runAll(indexer.reconcile())
    indexer.close()
    log(f"indexed {added}")
    return time.monotonic() - started


def _timed(connection: http.client.HTTPConnection, path: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return elapsed, body


def _percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "n": len(ordered)}


def apiBenchmark(bench: Bench, args: argparse.Namespace) -> dict:
    webPort = freePort()
    server = _server(
        bench, args, "api", args.messages, SMTP_WEB_LISTEN=f"tcp:{webPort}:interface=127.0.0.1"
    )
    log(f"storing {args.messages} messages in {server.spool}")
    storeSeconds = populate(server.spool, args.messages)
    log(f"stored in {storeSeconds:.1f} s; building the index")
    indexSeconds = buildIndex(server.spool)
    log(f"index built in {indexSeconds:.1f} s")
    server.start()
    waitPort(webPort, 60)
    connection = http.client.HTTPConnection("127.0.0.1", webPort, timeout=60)
    rng = random.Random(3)
    _waitIndexed(webPort, args.messages)
    settled = _waitIdle(server)
    log(f"server settled {settled:.1f} s after answering")
    total = _indexed(webPort)
    _, body = _timed(connection, f"/api/v1/messages?limit={min(total, 1000)}")
    ids = [m["ID"] for m in json.loads(body)["messages"]]
    queries = [
        "invoice",
        "subject:review",
        "from:bank.test",
        '"password reset"',
        "is:unread has:attachment",
        "to:user7@ -newsletter",
        "after:2026-11-20 security",
        "qz",
    ]
    results: dict[str, list[float]] = {"list": [], "list-deep": [], "search": [], "view": []}
    byQuery: dict[str, list[float]] = {}
    for _ in range(args.requests):
        results["list"].append(_timed(connection, "/api/v1/messages?start=0&limit=50")[0])
        start = rng.randrange(0, max(1, total - 50))
        results["list-deep"].append(
            _timed(connection, f"/api/v1/messages?start={start}&limit=50")[0]
        )
        text = rng.choice(queries)
        query = urllib.parse.quote(text)
        elapsed = _timed(connection, f"/api/v1/search?query={query}&limit=50")[0]
        results["search"].append(elapsed)
        byQuery.setdefault(text, []).append(elapsed)
        results["view"].append(_timed(connection, f"/api/v1/message/{rng.choice(ids)}")[0])
    connection.close()
    summary = {kind: _percentiles(samples) for kind, samples in results.items()}
    searches = {text: _percentiles(byQuery[text]) for text in queries if text in byQuery}
    print(f"API latency with {total} messages ({args.requests} requests of each kind):")
    for kind, values in summary.items():
        print(
            f"  {kind:10s} p50 {values['p50_ms']:7.2f} ms  p95 {values['p95_ms']:7.2f} ms"
            f"  p99 {values['p99_ms']:7.2f} ms"
        )
    for text, values in searches.items():
        print(
            f"    search {text!r:28s} p50 {values['p50_ms']:7.2f} ms  p95 {values['p95_ms']:7.2f} ms"
            f"  (n={values['n']})"
        )
    print(f"  goal: p95 < 100 ms; index built from the spool in {indexSeconds:.1f} s")
    return {
        "messages": total,
        "store_seconds": storeSeconds,
        "index_seconds": indexSeconds,
        "settle_seconds": settled,
        "latency": summary,
        "search_latency": searches,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("smtp", "api"))
    parser.add_argument("--messages", type=int)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--venv", default=sys.prefix)
    parser.add_argument("--no-images", action="store_true", help="plain directories, no root")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.messages is None:
        args.messages = 5000 if args.what == "smtp" else 100000
    if not args.no_images and os.geteuid() != 0:
        parser.error("needs root for the ext4 images (or --no-images)")
    work = tempfile.mkdtemp(prefix="gopherpost-bench-web.")
    bench = Bench(work, args.venv)
    try:
        result = smtpBenchmark(bench, args) if args.what == "smtp" else apiBenchmark(bench, args)
    finally:
        bench.stopAll()
        bench.unmountAll()
        shutil.rmtree(work, ignore_errors=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
