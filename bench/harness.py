"""
GopherPost's side-by-side benchmark (issue 6).  Run it through C{bench/run},
which makes the work directory and cleans up after it whatever happens.

Measures, on loopback only, every run bounded in count and time:
  - throughput with C{smtp-source} at 1, 20 and 100 sessions, 1 KiB and
    100 KiB messages, against GopherPost, Postfix, aiosmtpd and smtp-sink,
    each server on a fresh ext4 image, runs interleaved round-robin,
    medians reported: messages/s, server CPU seconds, peak RSS/PSS;
  - memory per idle session (thousands held open);
  - relay throughput: GopherPost delivering to smtp-sink through a loopback
    DNS server;
  - optionally (C{--profile}) a py-spy profile of GopherPost.
Prints tables and GopherPost's ratios, and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import procfs
from servers import (
    BENCH,
    LOCAL_RECIPIENT,
    SENDER,
    Aiosmtpd,
    Bench,
    GopherPost,
    Postfix,
    PostfixRelay,
    Server,
    SmtpSink,
    run,
)

REPOSITORY = os.path.dirname(BENCH)
ALL_SERVERS = ("gopherpost", "postfix", "aiosmtpd", "smtp-sink")
IDLE_SERVERS = ("gopherpost", "aiosmtpd", "postfix")
SIZES = {"1k": 1024, "100k": 102400}


def log(message: str) -> None:
    """
    Progress on standard error, timestamped.
    """
    print(time.strftime("%H:%M:%S ") + message, file=sys.stderr, flush=True)


# Installation


def install(args: argparse.Namespace) -> None:
    """
    Debian's postfix (smtp-source, smtp-sink, the peer) without starting
    its daemon; a virtual environment with aiosmtpd and this checkout.
    """
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    needed = [
        package
        for package, tool in (
            ("postfix", "smtp-source"),
            ("e2fsprogs", "mkfs.ext4"),
            ("bsdutils", "script"),
        )
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool)
    ]
    if needed:
        log(f"installing {' '.join(needed)} with apt-get")
        run(["apt-get", "update", "-qq"], env=env)
        subprocess.run(
            ["debconf-set-selections"],
            input=b"postfix postfix/main_mailer_type select No configuration\n",
            check=True,
        )
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + needed, env=env)
    python = os.path.join(args.venv, "bin", "python")
    fresh = not os.path.exists(python)
    if fresh:
        log(f"creating the virtual environment {args.venv}")
        result = subprocess.run([args.python, "-m", "venv", args.venv])
        if result.returncode != 0:
            run(["apt-get", "install", "-y", "-q", "python3-venv"], env=env)
            shutil.rmtree(args.venv, ignore_errors=True)
            run([args.python, "-m", "venv", args.venv])
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if fresh or subprocess.run([python, "-c", "import aiosmtpd, twisted"]).returncode != 0:
        log("installing aiosmtpd and GopherPost's dependencies from PyPI")
        run(pip + ["aiosmtpd", REPOSITORY])
    log("installing GopherPost from this checkout (pip install .)")
    run(pip + ["--no-deps", "--force-reinstall", REPOSITORY])
    if args.profile and not os.path.exists(os.path.join(args.venv, "bin", "py-spy")):
        log("installing py-spy")
        run(pip + ["py-spy"])


def versions(venv: str) -> dict[str, str]:
    """
    What is being compared.
    """
    python = os.path.join(venv, "bin", "python")
    code = (
        "import json, sys, twisted, aiosmtpd, gopherpost;"
        "print(json.dumps({'python': sys.version.split()[0], 'twisted': twisted.__version__,"
        "'aiosmtpd': aiosmtpd.__version__, 'gopherpost': gopherpost.__version__}))"
    )
    found = json.loads(run([python, "-c", code]).stdout)
    found["postfix"] = run(["postconf", "-dh", "mail_version"]).stdout.decode().strip()
    head = subprocess.run(
        ["git", "-C", REPOSITORY, "rev-parse", "--short", "HEAD"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    dirty = subprocess.run(
        ["git", "-C", REPOSITORY, "status", "--porcelain", "--", "gopherpost", "twisted"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    found["commit"] = head.stdout.decode().strip() + ("+changes" if dirty.stdout.strip() else "")
    return found


# One smtp-source run


def smtpSource(
    server: Server, sessions: int, messages: int, size: int, recipient: str, timeout: float
) -> dict[str, Any]:
    """
    Send C{messages} with C{smtp-source}; return wall time, client CPU and
    outcome.
    """
    args = [
        "smtp-source",
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-M",
        "client.bench.test",
        "-f",
        SENDER,
        "-t",
        recipient,
        f"{server.host}:{server.port}",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        status = "ok" if process.returncode == 0 else f"exit {process.returncode}"
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        status = "timeout"
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "status": status,
        "seconds": elapsed,
        "client_cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "output": output.decode(errors="replace").strip()[-500:],
    }


def measuredRun(
    server: Server,
    sessions: int,
    size: int,
    messages: int,
    args: argparse.Namespace,
    recipient: str = LOCAL_RECIPIENT,
) -> dict[str, Any]:
    """
    One measured throughput run against one server.
    """
    root = server.root()
    storedBefore = server.stored()
    cpuBefore = procfs.cpuSeconds(procfs.tree(root))
    machineBefore = procfs.machineCpu()
    overflowsBefore = procfs.listenOverflows()
    sampler = procfs.PeakSampler(root).start()
    result = smtpSource(server, sessions, messages, size, recipient, args.run_timeout)
    machineAfter = procfs.machineCpu()
    overflows = procfs.listenOverflows() - overflowsBefore
    cpuWindow = procfs.cpuSeconds(procfs.tree(root)) - cpuBefore
    expected = None if storedBefore is None else storedBefore + messages
    settled = server.settle(expected, args.settle_timeout)
    memory = sampler.stop()
    cpu = procfs.cpuSeconds(procfs.tree(root)) - cpuBefore
    storedAfter = server.stored()
    stored = None if storedBefore is None else storedAfter - storedBefore
    busy = machineAfter[0] - machineBefore[0]
    ok = result["status"] == "ok" and settled and (stored is None or stored == messages)
    record = {
        "server": server.name,
        "sessions": sessions,
        "size": size,
        "messages": messages,
        "ok": ok,
        "status": result["status"],
        "seconds": round(result["seconds"], 4),
        "msgs_per_s": round(messages / result["seconds"], 1),
        "cpu_s": round(cpu, 3),
        "cpu_window_s": round(cpuWindow, 3),
        "client_cpu_s": round(result["client_cpu"], 3),
        "other_load": round(
            max(0.0, busy - cpuWindow - result["client_cpu"]) / result["seconds"], 2
        ),
        "stored": stored,
        "settled": settled,
        "listen_overflows": overflows,
        **memory,
    }
    if not ok:
        record["output"] = result["output"]
    server.syncStorage()
    return record


def warmMemory(gib: float) -> dict[str, Any]:
    """
    Touch C{gib} GiB of free memory once (zeros to a file in C{/dev/shm},
    then removed), at most 40% of what is available.

    On this virtual machine the first write to a page of guest memory the
    host has never backed costs about 2.7 us per 4 KiB (100 KiB written to
    a new file: 275 us instead of 47).  Without this, a server whose files
    stay in the page cache (GopherPost, aiosmtpd) pays that as its cache
    grows into untouched memory, and one that deletes them (Postfix with
    its discard transport) does not; on a long-running host the memory has
    long been touched.
    """
    available = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    size = int(min(gib * 1024**3, available * 0.4))
    path = os.path.join("/dev/shm", f"gopherpost-bench-warm-{os.getpid()}")
    started = time.monotonic()
    chunk = bytes(1024 * 1024)
    try:
        with open(path, "wb") as f:
            for _ in range(size // len(chunk)):
                f.write(chunk)
    except OSError as e:
        log(f"warming memory stopped early: {e}")
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return {"gib": round(size / 1024**3, 1), "seconds": round(time.monotonic() - started, 1)}


def waitQuiet(timeout: float, threshold: float = 0.1, window: float = 1.0) -> tuple[float, float]:
    """
    Wait until the machine keeps at most C{threshold} cores busy over
    C{window} seconds, or C{timeout} seconds have passed.

    @return: seconds waited, and the cores busy in the last window.
    """
    started = time.monotonic()
    while True:
        busyBefore, _ = procfs.machineCpu()
        time.sleep(window)
        busyAfter, _ = procfs.machineCpu()
        cores = (busyAfter - busyBefore) / window
        if cores <= threshold or time.monotonic() - started >= timeout:
            return time.monotonic() - started, cores


def listenBacklog(host: str, port: int) -> int | None:
    """
    The backlog of the socket listening on C{host:port} (ss's Send-Q).
    """
    out = (
        subprocess.run(
            ["ss", "-Hltn", f"src {host}:{port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        .stdout.decode()
        .split()
    )
    try:
        return int(out[2])
    except (IndexError, ValueError):
        return None


# Throughput


def configurations(args: argparse.Namespace) -> list[tuple]:
    """
    (sessions, size name) pairs in the order they are run.
    """
    return [(sessions, size) for size in args.sizes for sessions in args.sessions]


def throughput(servers: list[Server], args: argparse.Namespace) -> list[dict[str, Any]]:
    """
    Every configuration, C{--reps} times, servers round-robin (the order
    rotates so none is always first).
    """
    runs = []
    total = len(servers) * len(configurations(args)) * args.reps
    done = 0
    for rep in range(args.reps):
        for index, (sessions, sizeName) in enumerate(configurations(args)):
            size = SIZES[sizeName]
            messages = args.messages_large if size > 10000 else args.messages_small
            shift = (rep + index) % len(servers)
            for server in servers[shift:] + servers[:shift]:
                record = measuredRun(server, sessions, size, messages, args)
                record["rep"] = rep
                runs.append(record)
                done += 1
                log(
                    f"[{done}/{total}] {sizeName} x{sessions} {server.name}: "
                    f"{record['msgs_per_s']} msgs/s, cpu {record['cpu_s']} s, "
                    f"other load {record['other_load']}"
                    + (
                        f", {record['listen_overflows']} listen overflows"
                        if record["listen_overflows"]
                        else ""
                    )
                    + (
                        ""
                        if record["ok"]
                        else f"  FAILED: {record['status']} stored={record['stored']}"
                        f" {record.get('output', '')[-200:]!r}"
                    )
                )
                time.sleep(args.pause)
    return runs


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """
    Medians per configuration and server (failed runs left out).
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in runs:
        groups.setdefault((record["size"], record["sessions"], record["server"]), []).append(record)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for (size, sessions, server), records in groups.items():
        good = [r for r in records if r["ok"]]
        key = f"{size // 1024}k x{sessions}"
        entry: dict[str, Any] = {"runs": len(records), "failed": len(records) - len(good)}
        if good:
            rates = [r["msgs_per_s"] for r in good]
            entry.update(
                msgs_per_s=statistics.median(rates),
                min=min(rates),
                max=max(rates),
                cpu_s=statistics.median(r["cpu_s"] for r in good),
                cpu_ms_per_msg=round(
                    1000 * statistics.median(r["cpu_s"] / r["messages"] for r in good), 3
                ),
                peak_rss_mib=round(max(r["peak_rss"] for r in good) / 2**20, 1),
                peak_pss_mib=round(max(r["peak_pss"] for r in good) / 2**20, 1),
                peak_processes=max(r["peak_processes"] for r in good),
                other_load=statistics.median(r["other_load"] for r in good),
                listen_overflows=sum(r["listen_overflows"] for r in records),
            )
        summary.setdefault(key, {})[server] = entry
    return summary


def ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """
    GopherPost's median msgs/s divided by each peer's, per configuration.
    """
    result: dict[str, dict[str, float]] = {}
    for key, entries in summary.items():
        ours = entries.get("gopherpost", {}).get("msgs_per_s")
        for peer, entry in entries.items():
            if peer != "gopherpost" and ours and entry.get("msgs_per_s"):
                result.setdefault(key, {})[peer] = round(ours / entry["msgs_per_s"], 2)
    return result


# Latency


def latencyRun(
    server: Server, sessions: int, size: int, messages: int, args: argparse.Namespace
) -> dict[str, Any]:
    """
    One run of C{latency.py} against one server: C{messages} in all over
    C{sessions} connections, each message timed from its final dot to its
    250.
    """
    perSession = max(1, messages // sessions)
    command = [
        sys.executable,
        os.path.join(BENCH, "latency.py"),
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--sessions",
        str(sessions),
        "--messages",
        str(perSession),
        "--size",
        str(size),
        "--sender",
        SENDER,
        "--recipient",
        LOCAL_RECIPIENT,
        "--timeout",
        str(args.run_timeout),
    ]
    storedBefore = server.stored()
    process = subprocess.run(command, capture_output=True, timeout=args.run_timeout + 30)
    try:
        record: dict[str, Any] = json.loads(process.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        record = {"errors": [process.stderr.decode(errors="replace")[-300:]]}
    expected = None if storedBefore is None else storedBefore + sessions * perSession
    settled = server.settle(expected, args.settle_timeout)
    record.update(
        server=server.name,
        sessions=sessions,
        size=size,
        ok=process.returncode == 0 and settled and not record.get("errors"),
    )
    server.syncStorage()
    return record


def latency(servers: list[Server], args: argparse.Namespace) -> dict[str, Any]:
    """
    Per-message latency at C{--latency-sessions}, C{--latency-sizes},
    C{--reps} times, servers round-robin; medians of the runs' p50 and p99.
    """
    runs = []
    configurations = [(n, z) for z in args.latency_sizes for n in args.latency_sessions]
    for rep in range(args.reps):
        for index, (sessions, sizeName) in enumerate(configurations):
            shift = (rep + index) % len(servers)
            for server in servers[shift:] + servers[:shift]:
                record = latencyRun(server, sessions, SIZES[sizeName], args.latency_messages, args)
                record["rep"] = rep
                runs.append(record)
                log(
                    f"latency {sizeName} x{sessions} {server.name}: p50 {record.get('p50_ms')} ms, "
                    f"p99 {record.get('p99_ms')} ms, {record.get('msgs_per_s')} msgs/s"
                    + ("" if record["ok"] else f"  FAILED: {record.get('errors')}")
                )
                time.sleep(args.pause)
    summary: dict[str, dict[str, Any]] = {}
    for record in runs:
        key = f"{record['size'] // 1024}k x{record['sessions']}"
        summary.setdefault(key, {}).setdefault(record["server"], []).append(record)
    for entries in summary.values():
        for name, records in entries.items():
            good = [r for r in records if r["ok"]]
            entry: dict[str, Any] = {"runs": len(records), "failed": len(records) - len(good)}
            for field in ("p50_ms", "p90_ms", "p99_ms", "msgs_per_s"):
                if good:
                    entry[field] = round(statistics.median(r[field] for r in good), 3)
            entries[name] = entry
    return {"runs": runs, "summary": summary}


def latencyTable(result: dict[str, Any], order: list[str], args) -> str:
    lines = [
        "Latency, final dot to 250 (latency.py: one connection per session, "
        f"{args.latency_messages} messages per run; medians of {args.reps} runs' percentiles, ms)",
        f"{'config':<11} {'server':<13} {'p50':>8} {'p90':>8} {'p99':>8} {'msgs/s':>8}",
    ]
    for sizeName in args.latency_sizes:
        for sessions in args.latency_sessions:
            key = f"{SIZES[sizeName] // 1024}k x{sessions}"
            for name in order:
                entry = result["summary"].get(key, {}).get(name)
                if not entry:
                    continue
                if "p50_ms" not in entry:
                    lines.append(f"{key:<11} {name:<13} {'failed':>8}")
                    continue
                lines.append(
                    f"{key:<11} {name:<13} {entry['p50_ms']:>8.3f} {entry['p90_ms']:>8.3f} "
                    f"{entry['p99_ms']:>8.3f} {entry['msgs_per_s']:>8.0f}"
                    + (f" ({entry['failed']} failed)" if entry["failed"] else "")
                )
    return "\n".join(lines)


# Idle sessions


def idleSessions(server: Server, count: int, port: int, args: argparse.Namespace) -> dict[str, Any]:
    """
    Hold C{count} greeted (EHLO) sessions open; memory delta per session.
    """
    root = server.root()
    # At most 32 greetings pending at once, so a small listen backlog does
    # not turn the memory measurement into an accept-queue test.
    idle = [
        sys.executable,
        os.path.join(BENCH, "idle.py"),
        "--port",
        str(port),
        "--ehlo",
        "--batch",
        "32",
        "--connect-timeout",
        str(args.idle_timeout),
    ]
    # Warm up: a few messages and sessions, so one-time costs are not counted.
    smtpSource(server, 5, 20, 1024, LOCAL_RECIPIENT, args.run_timeout)
    run(idle + ["--count", "50", "--hold", "0"], timeout=args.run_timeout + 30)
    time.sleep(2)
    pidsBefore = procfs.tree(root)
    rssBefore, pssBefore = procfs.memory(pidsBefore)
    holder = server.bench.spawn(
        f"idle-{server.name}",
        idle + ["--count", str(count), "--hold", str(args.idle_timeout + 120)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([holder.stdout], [], [], args.idle_timeout + 30)
        line = holder.stdout.readline() if ready else b"{}"
        report = json.loads(line or b"{}")
        time.sleep(3)
        samples = []
        for _ in range(3):
            pids = procfs.tree(root)
            samples.append((procfs.memory(pids), len(pids)))
            time.sleep(1)
        (rssAfter, pssAfter), processes = max(samples, key=lambda s: s[0][1])
        service = getattr(server, "idleService", None)
        if service:
            # Postfix: the smtpd processes serving the idle sessions.
            smtpds = [pid for pid in procfs.tree(root) if service in _cmdline(pid)]
            smtpdRSS, smtpdPSS = procfs.memory(smtpds)
    finally:
        try:
            holder.stdin.write(b"done\n")
            holder.stdin.close()
        except OSError:
            pass
        Bench.terminate(holder, grace=60)
    held = report.get("ready", 0) or 1
    extra = {}
    if service:
        extra = {
            "smtpd_processes": len(smtpds),
            "smtpd_kib_per_session_rss": round(smtpdRSS / held / 1024, 2),
            "smtpd_kib_per_session_pss": round(smtpdPSS / held / 1024, 2),
        }
    return {
        "server": server.name,
        "requested": count,
        "held": report.get("ready", 0),
        "failed": report.get("failed"),
        "connect_seconds": report.get("seconds"),
        "rss_before_mib": round(rssBefore / 2**20, 1),
        "rss_after_mib": round(rssAfter / 2**20, 1),
        "pss_before_mib": round(pssBefore / 2**20, 1),
        "pss_after_mib": round(pssAfter / 2**20, 1),
        "kib_per_session_rss": round((rssAfter - rssBefore) / held / 1024, 2),
        "kib_per_session_pss": round((pssAfter - pssBefore) / held / 1024, 2),
        "processes_before": len(pidsBefore),
        "processes_after": processes,
        **extra,
    }


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# Relay


#: Where the relay benchmark's messages go (the loopback DNS zone's MX).
RELAY_RECIPIENT = "user@relay.test"


def relayBenchmark(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """
    GopherPost relaying to smtp-sink on 127.0.0.2 found through a loopback
    DNS server (MX relay.test -> mx.relay.test -> 127.0.0.2), and Postfix
    relaying the same load to the same sink through the same DNS server
    (L{PostfixRelay}), run for run interleaved.  With C{--compare}, the
    other tree's GopherPost relays too.  Postfix's figures are under
    C{"postfix"} (with GopherPost's ratio to them), the other tree's under
    C{"compare"}.
    """
    sink = SmtpSink(bench, "relay-sink", host="127.0.0.2")
    sink.start()
    # Port 53: Postfix resolves through resolv.conf, which takes no port.
    dnsHost, dnsPort = args.relay_dns, 53
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as probe:
                probe.bind((dnsHost, dnsPort))
    except OSError as e:
        raise RuntimeError(
            f"{dnsHost}:53 is not free for the relay's DNS server ({e}): see --relay-dns"
        ) from None
    dnsServer = bench.spawn(
        "relay-dns",
        [
            bench.python(),
            os.path.join(BENCH, "dnszone.py"),
            "--host",
            dnsHost,
            "--port",
            str(dnsPort),
            "--domain",
            "relay.test",
            "--mx",
            "mx.relay.test",
            "--address",
            "127.0.0.2",
        ],
        stdout=subprocess.PIPE,
    )
    ready, _, _ = select.select([dnsServer.stdout], [], [], 30)
    if not ready or dnsServer.stdout.readline().strip() != b"ready":
        raise RuntimeError("the relay benchmark's DNS server did not start")
    settings = dict(
        SMTP_DNS_SERVERS=f"{dnsHost}:{dnsPort}",
        SMTP_OUTBOUND_PORT=str(sink.port),
        SMTP_OUTBOUND_TLS="none",
    )
    servers: dict[str, Any] = {"gopherpost": GopherPost(bench, "gopherpost-relay", **settings)}
    if "postfix" in args.relay_servers:
        servers["postfix"] = PostfixRelay(bench, sink.port, dnsHost)
    if args.compare:
        servers["gopherpost-b"] = GopherPost(
            bench,
            "gopherpost-relay-b",
            PYTHONPATH=args.compare,
            **{**settings, **args.compare_env},
        )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.start()
        for rep in range(args.reps + 1):
            count = 50 if rep == 0 else args.relay_messages
            order = list(servers.items())
            shift = rep % len(order)
            for name, server in order[shift:] + order[:shift]:
                record = _relayRun(server, rep, count, args)
                if rep == 0:
                    log(f"relay warm-up {name}: {record['relayed']}/{count} relayed")
                    continue
                runs[name].append(record)
                log(
                    f"relay run {rep} {name}: {record['msgs_per_s']} msgs/s delivered "
                    f"(accepted at {record['accept_msgs_per_s']}), {record['relayed']}/{count}; "
                    f"CPU s: {record['cpu_s']} in all, main process {record['main_process_cpu_s']}"
                )
                server.syncStorage()
                time.sleep(args.pause)
        profileEntry = None
        server = servers["gopherpost"]
        if args.profile:
            # An extra, unmeasured run under py-spy.
            path = os.path.join(args.results, f"{args.stamp}-profile-relay.txt")
            seconds = profiled(
                bench,
                server.root(),
                path,
                lambda: _relayRun(server, 0, args.relay_messages, args)["seconds"],
            )
            profileEntry = profileSummary(path, args.relay_messages, seconds)
        outcomes = {
            name: _relayOutcomes(s.spool) if isinstance(s, GopherPost) else s.outcomes()
            for name, s in servers.items()
        }
    finally:
        for server in servers.values():
            server.stop()
        Bench.terminate(dnsServer)
        sink.stop()
    results = {name: _relaySummary(runs[name], outcomes[name]) for name in servers}
    result = results["gopherpost"]
    result["profile"] = profileEntry
    result["settings"] = {
        k: v
        for k, v in servers["gopherpost"].environ().items()
        if k.startswith("SMTP_OUT") or k == "SMTP_DNS_SERVERS"
    }
    if "gopherpost-b" in results:
        result["compare"] = results["gopherpost-b"]
    if "postfix" in results:
        result["postfix"] = peer = results["postfix"]
        if result["msgs_per_s"] and peer["msgs_per_s"]:
            result["ratio_postfix"] = round(result["msgs_per_s"] / peer["msgs_per_s"], 2)
    return result


def _relayRun(server: Any, rep: int, count: int, args: argparse.Namespace) -> dict[str, Any]:
    """
    One relay run: C{count} messages in through smtp-source, timed until
    the last is delivered (or the run's time is up).
    """
    root = server.root()
    before = server.relayed()
    cpuBefore = procfs.cpuSeconds(procfs.tree(root))
    threadsBefore = procfs.threadCpu(root)
    sampler = procfs.PeakSampler(root).start()
    started = time.monotonic()
    result = smtpSource(server, args.relay_sessions, count, 1024, RELAY_RECIPIENT, args.run_timeout)
    accepted = time.monotonic()
    deadline = started + args.run_timeout
    while server.relayed() < before + count and time.monotonic() < deadline:
        time.sleep(0.02)
    finished = time.monotonic()
    memory = sampler.stop()
    relayed = server.relayed() - before
    return {
        "rep": rep - 1,
        "messages": count,
        "sessions": args.relay_sessions,
        "relayed": relayed,
        "ok": result["status"] == "ok" and relayed == count,
        "status": result["status"],
        "accept_msgs_per_s": round(count / (accepted - started), 1),
        "msgs_per_s": round(relayed / (finished - started), 1),
        "seconds": round(finished - started, 3),
        "cpu_s": round(procfs.cpuSeconds(procfs.tree(root)) - cpuBefore, 3),
        "main_process_cpu_s": {
            k: round(v - threadsBefore[k], 3) for k, v in procfs.threadCpu(root).items()
        },
        **memory,
    }


def _relaySummary(runs: list[dict[str, Any]], outcomes: tuple) -> dict[str, Any]:
    """
    Medians over the good runs of one server.
    """
    good = [r for r in runs if r["ok"]]
    delivered, failed = outcomes
    return {
        "runs": runs,
        "msgs_per_s": round(statistics.median(r["msgs_per_s"] for r in good), 1) if good else None,
        "accept_msgs_per_s": round(statistics.median(r["accept_msgs_per_s"] for r in good), 1)
        if good
        else None,
        "cpu_ms_per_msg": round(
            1000 * statistics.median(r["cpu_s"] / r["messages"] for r in good), 3
        )
        if good
        else None,
        "recipients_delivered": delivered,
        "recipients_failed": failed,
    }


def _relayOutcomes(spool: str) -> tuple:
    delivered = failed = 0
    for date in os.listdir(spool):
        directory = os.path.join(spool, date)
        if not date[:1].isdigit():
            continue
        for name in os.listdir(directory):
            if name.endswith(".relayed"):
                with open(os.path.join(directory, name), "rb") as f:
                    state = json.loads(f.read())
                for recipient in state.get("recipients", []):
                    if recipient.get("status") == "delivered":
                        delivered += 1
                    else:
                        failed += 1
    return delivered, failed


# Profile


def profiled(bench: Bench, pid: int, path: str, action) -> Any:
    """
    Run C{action()} while py-spy records C{pid} into C{path} (raw collapsed
    stacks, 100 Hz or C{BENCH_PROFILE_RATE}, per thread, without pausing
    the server to sample); return what C{action} returned.
    """
    spy = bench.spawn(
        "py-spy",
        [
            os.path.join(bench.venv, "bin", "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            os.environ.get("BENCH_PROFILE_RATE", "100"),
            "--nonblocking",
            "--format",
            "raw",
            "--threads",
            "--output",
            path,
        ],
    )
    time.sleep(2)
    try:
        return action()
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            Bench.terminate(spy)


def profileSummary(path: str, messages: int, seconds: float) -> dict[str, Any]:
    """
    L{_collapse} of a py-spy file, with the rate achieved under the profiler.
    """
    if not os.path.exists(path):
        return {"error": "py-spy wrote nothing (see logs/py-spy.log)"}
    entry = _collapse(path)
    entry.update(
        file=path, msgs_per_s_under_profiler=round(messages / seconds, 1), seconds=round(seconds, 2)
    )
    return entry


def profile(
    bench: Bench, server: GopherPost, args: argparse.Namespace, results: str, stamp: str
) -> dict[str, Any]:
    """
    py-spy on GopherPost during extra runs (3 times the usual messages) at
    20 sessions, 1 KiB and 100 KiB.
    """
    out: dict[str, Any] = {}
    for sizeName in ("1k", "100k"):
        size = SIZES[sizeName]
        messages = 3 * (args.messages_large if size > 10000 else args.messages_small)
        path = os.path.join(results, f"{stamp}-profile-{sizeName}.txt")
        result = profiled(
            bench,
            server.root(),
            path,
            lambda messages=messages, size=size: smtpSource(
                server, 20, messages, size, LOCAL_RECIPIENT, args.run_timeout
            ),
        )
        server.syncStorage()
        out[sizeName] = profileSummary(path, messages, result["seconds"])
    return out


def _shortFrame(frame: str, line: bool = False) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, number = where.rpartition(":")
    for marker in ("site-packages/", "python3.11/", "lib/python3/dist-packages/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path}:{number})" if line else f"{name} ({path})"


def _collapse(path: str, top: int = 20) -> dict[str, Any]:
    """
    Summarise py-spy's raw output (one "thread;frame;...;frame COUNT" line
    per distinct stack).  Percentages are of all samples; the reactor
    (MainThread) and the thread pool are reported apart, since pool threads
    mostly wait in fsync or for work rather than burn CPU.
    """
    own: dict[str, Counter] = {"reactor": Counter(), "pool": Counter()}
    total: dict[str, Counter] = {"reactor": Counter(), "pool": Counter()}
    threads: Counter = Counter()
    ownLines: Counter = Counter()
    samples = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = stack.split(";")
            kind = "pool"
            while frames and frames[0].startswith(("thread ", "process ")):
                if frames[0].startswith("thread "):
                    kind = "reactor" if "MainThread" in frames[0] else "pool"
                frames = frames[1:]
            if not frames:
                continue
            samples += n
            threads[kind] += n
            short = [_shortFrame(f) for f in frames]
            own[kind][short[-1]] += n
            if kind == "reactor":
                ownLines[_shortFrame(frames[-1], line=True)] += n
            for name in set(short):
                if "gopherpost/" in name:
                    total[kind][name] += n

    def pct(n: int) -> float:
        return round(100.0 * n / samples, 1) if samples else 0.0

    return {
        "samples": samples,
        "threads": {k: pct(v) for k, v in threads.items()},
        "reactor_own": [(name, pct(n)) for name, n in own["reactor"].most_common(top)],
        "reactor_own_lines": [(name, pct(n)) for name, n in ownLines.most_common(10)],
        "reactor_gopherpost_total": [
            (name, pct(n)) for name, n in total["reactor"].most_common(top)
        ],
        "pool_own": [(name, pct(n)) for name, n in own["pool"].most_common(10)],
    }


# Output


def table(summary, order: list[str], args) -> str:
    lines = [
        "Throughput (smtp-source, 1 message per connection; median of "
        f"{args.reps}; CPU = server process tree, user+sys, per run)",
        f"{'config':<11} {'server':<11} {'msgs/s':>8} {'(min-max)':>15} {'CPU s':>7} "
        f"{'ms/msg':>7} {'RSS MiB':>8} {'PSS MiB':>8} {'procs':>5} {'other':>5} {'ovfl':>5}",
    ]
    for sizeName in args.sizes:
        for sessions in args.sessions:
            key = f"{SIZES[sizeName] // 1024}k x{sessions}"
            for server in order:
                entry = summary.get(key, {}).get(server)
                if not entry:
                    continue
                if "msgs_per_s" not in entry:
                    lines.append(f"{key:<11} {server:<11} {'failed':>8}")
                    continue
                failed = f" ({entry['failed']} failed)" if entry["failed"] else ""
                lines.append(
                    f"{key:<11} {server:<11} {entry['msgs_per_s']:>8.0f} "
                    f"{'(%.0f-%.0f)' % (entry['min'], entry['max']):>15} {entry['cpu_s']:>7.2f} "
                    f"{entry['cpu_ms_per_msg']:>7.3f} {entry['peak_rss_mib']:>8.1f} "
                    f"{entry['peak_pss_mib']:>8.1f} {entry['peak_processes']:>5} "
                    f"{entry['other_load']:>5.2f} {entry['listen_overflows']:>5}{failed}"
                )
    lines.append(
        "(other = average cores busy with processes that are neither the server nor smtp-source;\n"
        " ovfl = connections dropped by a full listen queue during its runs, machine-wide)"
    )
    return "\n".join(lines)


def ratioTable(ratio, args) -> str:
    keys = [f"{SIZES[s] // 1024}k x{n}" for s in args.sizes for n in args.sessions]
    peers = sorted(
        {p for v in ratio.values() for p in v},
        key=lambda p: ALL_SERVERS.index(p) if p in ALL_SERVERS else 99,
    )
    lines = [
        "GopherPost msgs/s / peer msgs/s (same run)",
        f"{'':<14}" + "".join(f"{k:>10}" for k in keys),
    ]
    for peer in peers:
        cells = "".join(f"{ratio.get(k, {}).get(peer, float('nan')):>10.2f}" for k in keys)
        lines.append(f"{'vs ' + peer:<14}{cells}")
    return "\n".join(lines)


def targets(summary, ratio, idle, relay) -> list[str]:
    """
    The issues' targets, each marked met or not.
    """
    lines = []

    def mark(label: str, value: float, goal: float, aim: float | None = None) -> None:
        goals = f">= {goal}" + (f", aim {aim}" if aim else "")
        lines.append(f"{label} = {value:.2f} ({goals}): " + ("met" if value >= goal else "NOT met"))

    # Issue 20: a client alone at least as fast as Postfix, groups as before.
    for key, goal, aim in (
        ("1k x1", 1.0, 1.3),
        ("100k x1", 1.0, 1.3),
        ("1k x20", 2.0, None),
        ("100k x20", 1.5, None),
    ):
        value = ratio.get(key, {}).get("postfix")
        if value is not None:
            mark(f"issue 20: {key} GopherPost/postfix", value, goal, aim)
    if relay and relay.get("msgs_per_s") is not None:
        value = relay["msgs_per_s"]
        lines.append(
            f"issue 20: relay {value:.0f} msgs/s (target >= 1500): "
            + ("met" if value >= 1500 else "NOT met")
        )
        if relay.get("ratio_postfix") is not None:
            mark("issue 20: relay GopherPost/postfix", relay["ratio_postfix"], 1.2)
    # Issue 6.
    for key in ("1k x20", "100k x20"):
        for peer, goal in (("postfix", 1.2), ("aiosmtpd", 2.0)):
            value = ratio.get(key, {}).get(peer)
            if value is not None:
                mark(f"issue 6: {key} GopherPost/{peer}", value, goal)
    for entry in idle:
        if entry["server"] == "gopherpost":
            value = entry["kib_per_session_pss"]
            lines.append(
                f"issue 6: idle session cost {value:.1f} KiB at {entry['held']} sessions (target <= 16): "
                + ("met" if value <= 16 else "NOT met")
            )
    return lines


# Main


def parseArguments(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", required=True, help=argparse.SUPPRESS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 repetition, few messages, 500 idle sessions",
    )
    parser.add_argument(
        "--servers",
        default=",".join(ALL_SERVERS),
        help="comma-separated, from: " + ", ".join(ALL_SERVERS),
    )
    parser.add_argument("--sizes", default="1k,100k", help="comma-separated: 1k, 100k")
    parser.add_argument("--sessions", default="1,20,100", help="comma-separated session counts")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each configuration")
    parser.add_argument("--messages-small", type=int, default=2000, help="messages per 1 KiB run")
    parser.add_argument("--messages-large", type=int, default=500, help="messages per 100 KiB run")
    parser.add_argument("--run-timeout", type=float, default=120.0, help="seconds per run at most")
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for a queue to drain after a run",
    )
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between runs")
    parser.add_argument(
        "--latency-messages",
        type=int,
        default=1000,
        help="messages per latency run, shared by its sessions (0: skip the latency runs)",
    )
    parser.add_argument("--latency-sessions", default="1,20", help="comma-separated session counts")
    parser.add_argument("--latency-sizes", default="1k", help="comma-separated: 1k, 100k")
    parser.add_argument("--idle", type=int, default=5000, help="idle sessions to hold (0: skip)")
    parser.add_argument("--idle-servers", default=",".join(IDLE_SERVERS))
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=300.0,
        help="seconds to open the idle sessions at most",
    )
    parser.add_argument(
        "--relay-messages",
        type=int,
        default=2000,
        help="messages per relay run (0: skip the relay benchmark)",
    )
    parser.add_argument("--relay-sessions", type=int, default=20)
    parser.add_argument(
        "--relay-servers",
        default="gopherpost,postfix",
        help="who relays in the relay benchmark (gopherpost always; postfix: PostfixRelay)",
    )
    parser.add_argument(
        "--relay-dns",
        default="127.0.0.3",
        metavar="ADDRESS",
        help="loopback address where the relay's DNS server answers on port 53 "
        "(Postfix's resolv.conf takes no port)",
    )
    parser.add_argument(
        "--warm-memory",
        type=float,
        default=8.0,
        metavar="GIB",
        help="touch this much free memory once before measuring (0: do not)",
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=120.0,
        help="seconds to wait at most for a quiet machine before the relay benchmark",
    )
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput matrix")
    parser.add_argument(
        "--no-direct-io",
        action="store_true",
        help="loop devices through the page cache of the file system holding the "
        "images (mount -o loop's default) instead of direct I/O",
    )
    parser.add_argument(
        "--compare",
        metavar="TREE",
        help="also run GopherPost from another source tree (e.g. a git worktree of an "
        "older commit) as server gopherpost-b, interleaved with the others",
    )
    parser.add_argument(
        "--compare-env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a setting for gopherpost-b only (repeatable); with --compare . it compares "
        "settings of one tree, e.g. --compare . --compare-env SMTP_WORKERS=2",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile GopherPost with py-spy at 20 sessions"
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="copy the servers' logs to the results directory"
    )
    parser.add_argument("--no-install", action="store_true", help="use what is installed")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the venv")
    parser.add_argument("--venv", default=os.path.join(BENCH, ".venv"))
    parser.add_argument("--results", default=os.path.join(BENCH, "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 1
        args.messages_small = min(args.messages_small, 300)
        args.messages_large = min(args.messages_large, 100)
        args.idle = min(args.idle, 500)
        args.relay_messages = min(args.relay_messages, 300)
        args.latency_messages = min(args.latency_messages, 200)
        args.warm_memory = min(args.warm_memory, 1.0)
    args.servers = [s for s in args.servers.split(",") if s]
    args.idle_servers = [s for s in args.idle_servers.split(",") if s]
    args.relay_servers = [s for s in args.relay_servers.split(",") if s]
    args.sizes = [s.lower() for s in args.sizes.split(",") if s]
    args.sessions = [int(s) for s in args.sessions.split(",") if s]
    args.latency_sessions = [int(s) for s in args.latency_sessions.split(",") if s]
    args.latency_sizes = [s.lower() for s in args.latency_sizes.split(",") if s]
    for name in args.servers + args.idle_servers:
        if name not in ALL_SERVERS:
            parser.error(f"unknown server {name!r}")
    for size in args.sizes + args.latency_sizes:
        if size not in SIZES:
            parser.error(f"unknown size {size!r}")
    compareEnv = {}
    for item in args.compare_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("SMTP_"):
            parser.error(f"--compare-env: {item!r} is not SMTP_NAME=VALUE")
        compareEnv[name] = value
    args.compare_env = compareEnv
    if args.compare_env and not args.compare:
        parser.error("--compare-env needs --compare (e.g. --compare .)")
    if args.compare:
        args.compare = os.path.abspath(args.compare)
        if not os.path.isfile(os.path.join(args.compare, "gopherpost", "tap.py")):
            parser.error(f"--compare: {args.compare} is not a GopherPost source tree")
        args.servers.append("gopherpost-b")
    return args


def main(argv=None) -> int:
    args = parseArguments(argv)
    if os.geteuid() != 0:
        print("bench/run: must run as root (loop mounts, postfix, apt-get)", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.idle and hard < args.idle + 200:
        log(f"warning: file limit {hard} < {args.idle} idle sessions")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    if not args.no_install:
        install(args)
    bench = Bench(args.work, args.venv, directIO=not args.no_direct_io)
    stamp = args.stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    os.makedirs(args.results, exist_ok=True)
    result: dict[str, Any] = {
        "started": stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "loadavg_before": open("/proc/loadavg").read().split()[:3],
        },
        "versions": versions(args.venv),
        "options": {k: v for k, v in vars(args).items() if k not in ("work",)},
    }
    if args.warm_memory:
        log(f"touching {args.warm_memory} GiB of free memory once (see warmMemory)")
        result["warm_memory"] = warmMemory(args.warm_memory)
        log(f"... {result['warm_memory']['gib']} GiB in {result['warm_memory']['seconds']} s")
    factories = {
        "gopherpost": GopherPost,
        "postfix": Postfix,
        "aiosmtpd": Aiosmtpd,
        "smtp-sink": SmtpSink,
        # The same installed dependencies, the other tree's code first on the path.
        "gopherpost-b": lambda bench: GopherPost(
            bench, "gopherpost-b", PYTHONPATH=args.compare, **args.compare_env
        ),
    }
    servers: dict[str, Server] = {}
    completed = False
    try:
        wanted = list(dict.fromkeys(args.servers + [s for s in args.idle_servers if args.idle]))
        for name in wanted:
            log(
                f"starting {name} (fresh ext4 image for its storage)"
                if name != "smtp-sink"
                else f"starting {name}"
            )
            servers[name] = factories[name](bench)
            servers[name].start()
        result["servers"] = {
            n: {
                "description": s.description,
                "port": s.port,
                "listen_backlog": listenBacklog(s.host, s.port),
            }
            for n, s in servers.items()
        }
        result["servers"].get("gopherpost", {})["environment"] = (
            servers["gopherpost"].environ() if "gopherpost" in servers else None
        )
        measured = [servers[n] for n in args.servers]
        if not args.no_throughput:
            for server in measured:
                smtpSource(server, 10, 200, 1024, LOCAL_RECIPIENT, args.run_timeout)  # warm-up
                server.settle(None, args.settle_timeout)
                server.syncStorage()
            runs = throughput(measured, args)
            result["runs"] = runs
            result["summary"] = summary = summarize(runs)
            result["ratios"] = ratio = ratios(summary)
        else:
            summary, ratio = {}, {}
        if args.latency_messages:
            result["latency"] = latency(measured, args)
        if args.profile and "gopherpost" in servers:
            log("profiling GopherPost with py-spy at 20 sessions")
            result["profile"] = profile(bench, servers["gopherpost"], args, args.results, stamp)
        idle = []
        if args.idle:
            for name in args.idle_servers:
                old = servers[name]
                if name == "postfix":
                    fresh, port = old, old.idlePort
                else:
                    # A fresh process, so freed memory from the throughput
                    # runs does not hide the sessions' cost.
                    old.stop()
                    fresh = (
                        GopherPost(
                            bench, "gopherpost-idle", mount=old.mount, spoolName="spool-idle"
                        )
                        if name == "gopherpost"
                        else Aiosmtpd(
                            bench, "aiosmtpd-idle", mount=old.mount, maildirName="Maildir-idle"
                        )
                    )
                    fresh.start()
                    servers[name + "-idle"] = fresh
                    port = fresh.port
                log(f"holding {args.idle} idle sessions against {name}")
                entry = idleSessions(fresh, args.idle, port, args)
                entry["server"] = name
                idle.append(entry)
                log(
                    f"idle {name}: {entry['held']} held, {entry['kib_per_session_pss']} KiB/session (PSS), "
                    f"{entry['kib_per_session_rss']} KiB/session (RSS)"
                )
                fresh.stop()
        result["idle"] = idle
        for server in servers.values():
            server.stop()
        relay = None
        if args.relay_messages:
            # Stopping Postfix after the idle sessions ends thousands of
            # smtpd processes: the relay has no peer in the same run, so it
            # starts on a quiet machine.
            waited, busy = waitQuiet(args.quiet_timeout)
            log(
                f"relay benchmark (waited {waited:.0f} s for a quiet machine: {busy:.2f} cores busy)"
            )
            relay = relayBenchmark(bench, args)
            relay["quiet_wait_s"] = round(waited, 1)
        result["relay"] = relay
        result["targets"] = targets(summary, ratio, idle, relay)
        result["machine"]["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
        completed = True
    finally:
        for server in servers.values():
            try:
                server.stop()
            except Exception as e:  # keep cleaning up
                print(f"stopping {server.name}: {e}", file=sys.stderr)
        bench.stopAll()
        bench.unmountAll()
        if not completed or args.keep_logs:
            kept = os.path.join(args.results, f"{stamp}-logs")
            shutil.copytree(bench.logs, kept, dirs_exist_ok=True)
            log(("" if completed else "failed: ") + f"the servers' logs are kept in {kept}")
        path = os.path.join(args.results, f"{stamp}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1, default=str)
    report(result, args, path)
    return 0


def report(result: dict[str, Any], args, path: str) -> None:
    """
    Print the tables.
    """
    v = result["versions"]
    print(
        f"\nGopherPost {v['gopherpost']} ({v['commit']}), Twisted {v['twisted']}, Python {v['python']}; "
        f"Postfix {v['postfix']}; aiosmtpd {v['aiosmtpd']}; {result['machine']['cpus']} CPUs, "
        f"load {' '.join(result['machine']['loadavg_before'])} before, "
        f"{' '.join(result['machine'].get('loadavg_after', []))} after"
    )
    print(
        "Listen backlogs: "
        + ", ".join(f"{n} {s.get('listen_backlog')}" for n, s in result.get("servers", {}).items())
    )
    if result.get("summary"):
        print()
        print(table(result["summary"], args.servers, args))
        print()
        print(ratioTable(result["ratios"], args))
    if result.get("latency"):
        print()
        print(latencyTable(result["latency"], args.servers, args))
    if result.get("idle"):
        print("\nIdle sessions (greeted with EHLO, held open; delta of the server's process tree)")
        print(f"{'server':<11} {'held':>6} {'KiB/sess PSS':>13} {'KiB/sess RSS':>13} {'procs':>11}")
        for e in result["idle"]:
            print(
                f"{e['server']:<11} {e['held']:>6} {e['kib_per_session_pss']:>13.2f} "
                f"{e['kib_per_session_rss']:>13.2f} {e['processes_before']:>5}->{e['processes_after']:<5}"
            )
            if "smtpd_processes" in e:
                print(
                    f"{'  (smtpd)':<11} {e['smtpd_processes']:>6} {e['smtpd_kib_per_session_pss']:>13.2f} "
                    f"{e['smtpd_kib_per_session_rss']:>13.2f}   sum of the idle service's smtpd processes"
                )
    relay = result.get("relay")
    if relay:
        print(
            f"\nRelay (-> loopback DNS MX -> smtp-sink on 127.0.0.2, 1 KiB, "
            f"{args.relay_sessions} sessions in, {args.relay_messages} messages, median of {args.reps}): "
            f"GopherPost {relay['msgs_per_s']} msgs/s first accept to last delivery "
            f"(accepted at {relay['accept_msgs_per_s']} msgs/s; {relay['cpu_ms_per_msg']} ms CPU/msg; "
            f"{relay['recipients_delivered']} delivered, {relay['recipients_failed']} failed)"
        )
        peer = relay.get("postfix")
        if peer:
            print(
                f"  postfix: {peer['msgs_per_s']} msgs/s (accepted at {peer['accept_msgs_per_s']} msgs/s; "
                f"{peer['cpu_ms_per_msg']} ms CPU/msg; {peer['recipients_delivered']} delivered, "
                f"{peer['recipients_failed']} deferred or bounced); GopherPost/Postfix "
                f"{relay.get('ratio_postfix')}"
            )
        other = relay.get("compare")
        if other:
            print(
                f"  gopherpost-b ({args.compare}): {other['msgs_per_s']} msgs/s "
                f"(accepted at {other['accept_msgs_per_s']} msgs/s; {other['cpu_ms_per_msg']} ms CPU/msg; "
                f"{other['recipients_delivered']} delivered, {other['recipients_failed']} failed)"
            )
    profiles = dict(result.get("profile") or {})
    if relay and relay.get("profile"):
        profiles["relay 1k"] = relay["profile"]
    if profiles:
        for sizeName, entry in profiles.items():
            if "reactor_own" not in entry:
                print(f"\nprofile {sizeName}: {entry}")
                continue
            print(
                f"\nProfile, 20 sessions, {sizeName} ({entry['samples']} samples at 100 Hz, "
                f"{entry['msgs_per_s_under_profiler']} msgs/s under py-spy); % of samples by thread: "
                f"{entry['threads']}"
            )
            print("  reactor thread, own time:")
            for name, pct in entry["reactor_own"][:12]:
                print(f"    {pct:5.1f}%  {name}")
            print("  reactor thread, own time by line:")
            for name, pct in entry["reactor_own_lines"][:5]:
                print(f"    {pct:5.1f}%  {name}")
            print("  reactor thread, total time in GopherPost functions:")
            for name, pct in entry["reactor_gopherpost_total"][:10]:
                print(f"    {pct:5.1f}%  {name}")
            print("  thread pool, own time:")
            for name, pct in entry["pool_own"][:5]:
                print(f"    {pct:5.1f}%  {name}")
    if result.get("targets"):
        print("\nTargets:")
        for line in result["targets"]:
            print("  " + line)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    sys.exit(main())
