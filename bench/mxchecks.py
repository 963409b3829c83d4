"""
What the MX checks cost (issue 16): messages per second at 20 concurrent
sessions from clients outside the relay networks, with SPF + DKIM + DMARC
on (every message DKIM-signed, SPF and DMARC records served by a loopback
DNS server) against every check off, side by side in one run, interleaved.

    python3 bench/mxchecks.py                     # 3 rounds of 2,000 messages
    python3 bench/mxchecks.py --messages 300 --rounds 1
    python3 bench/mxchecks.py --spool-root /mnt/fresh-ext4

Run from the repository root.  Each mode is a real C{twistd gopherpost}
process (one inbound process, C{SMTP_WORKERS=1}) with a spool of its own
under C{--spool-root} (give it a fresh ext4 image, as
/work/shared/BENCHMARKING.md says; the default, a directory in /tmp, is
only good for a short run).  The DNS server runs in this process; the
clients are threads of this process, each one session sending its share of
the messages (RSET between them), bound to 127.0.0.5... so that the server
sees clients without relay permission.  Per mode it prints msgs/s and the
server's CPU milliseconds per message (the steadier figure on a busy
machine), and the ratio of the two modes.  The messages are signed before
the clock starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import reactor as _reactor  # noqa: E402

from tests.support.dnsserver import DNSTestServer  # noqa: E402
from tests.support.mxchecks import SigningKey  # noqa: E402

#: The global reactor (its thread-safe calls are not in its declared type).
reactor: Any = _reactor
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENDER_DOMAIN = "sender.test"
RECIPIENT = "rcpt@gopherpost.test"

#: Settings of each mode on top of the common ones.
MODES: dict[str, dict[str, str]] = {
    "checks off": {
        "SMTP_SENDER_AUTH": "false",
        "SMTP_BAN_THRESHOLD": "0",
        "SMTP_RATE_CONNECTIONS": "0",
        "SMTP_RATE_MESSAGES": "0",
        "SMTP_RATE_RECIPIENTS": "0",
        "SMTP_RATE_USER_MESSAGES": "0",
    },
    "SPF+DKIM+DMARC": {"SMTP_SENDER_AUTH": "true"},
}


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpuSeconds(pid: int) -> float:
    """
    User + system CPU seconds of a process and its reaped children.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def startDNS(key: SigningKey) -> DNSTestServer:
    """
    The sender's zone: SPF allowing loopback, the DKIM key, DMARC p=reject
    (so that a failure would show as refusals).
    """
    server = DNSTestServer(reactor)
    reactor.callFromThread(server.start)
    deadline = time.monotonic() + 10
    while server.port is None:
        if time.monotonic() > deadline:
            raise SystemExit("bench/mxchecks.py: the DNS server did not start")
        time.sleep(0.01)
    server.addTXT(SENDER_DOMAIN, "v=spf1 ip4:127.0.0.0/8 -all")
    server.addTXT(f"_dmarc.{SENDER_DOMAIN}", "v=DMARC1; p=reject")
    key.publish(server)
    return server


def messages(key: SigningKey, count: int, size: int) -> list[bytes]:
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = (line * (size // len(line) + 1))[:size]
    signed = []
    for n in range(count):
        data = (
            b"From: Bench <bench@%s>\r\nTo: %s\r\nSubject: bench %d\r\n"
            b"Date: Tue, 01 Dec 2026 12:00:00 +0000\r\nMessage-ID: <bench-%d@%s>\r\n\r\n"
            % (SENDER_DOMAIN.encode(), RECIPIENT.encode(), n, n, SENDER_DOMAIN.encode())
        ) + body
        signed.append(key.sign(data))
    return signed


class Node:
    """
    One C{twistd gopherpost} for a mode.
    """

    def __init__(self, mode: str, spool: str, dns: DNSTestServer, log: str) -> None:
        self.port = freePort()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": REPOSITORY,
            "SMTP_PORT": str(self.port),
            "SMTP_LISTEN_ADDR": "127.0.0.1",
            "SMTP_HOSTNAME": "mx.gopherpost.test",
            "SMTP_LOCAL_DOMAINS": "gopherpost.test",
            "SMTP_ALLOW_NETWORKS": "127.0.0.0/8",
            "SMTP_RELAY_NETWORKS": "127.0.0.2/32",
            "SMTP_QUEUE_PATH": spool,
            "SMTP_HEALTH_DISABLE": "true",
            "SMTP_TLS_DISABLE": "true",
            "SMTP_WORKERS": "1",
            "SMTP_DNS_SERVERS": "%s:%d" % dns.address,
        }
        env.update(MODES[mode])
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
            + ["--nodaemon", "--pidfile=", "gopherpost"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"bench/mxchecks.py: {mode} did not start (see {log})"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def send(port: int, sessions: int, data: list[bytes]) -> tuple[float, int, list[str]]:
    """
    C{sessions} threads, one session each, sending C{data} between them.

    @return: the wall time, how many were accepted, the first refusals.
    """
    accepted = [0] * sessions
    problems: list[str] = []
    barrier = threading.Barrier(sessions + 1)

    def one(index: int) -> None:
        mine = data[index::sessions]
        client = smtplib.SMTP(
            "127.0.0.1", port, timeout=60, source_address=(f"127.0.0.{5 + index}", 0)
        )
        client.ehlo("client.bench.test")
        barrier.wait()
        for message in mine:
            try:
                client.sendmail(f"bench@{SENDER_DOMAIN}", [RECIPIENT], message)
                accepted[index] += 1
            except smtplib.SMTPException as e:
                if len(problems) < 5:
                    problems.append(repr(e))
                client.rset()
        client.quit()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.monotonic()
    for t in threads:
        t.join()
    return time.monotonic() - started, sum(accepted), problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024, help="body octets")
    parser.add_argument("--spool-root", default=None)
    args = parser.parse_args(argv)

    root = args.spool_root or tempfile.mkdtemp(prefix="gopherpost-bench-mx-")
    dnsThread = threading.Thread(
        target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
    )
    dnsThread.start()
    key = SigningKey(SENDER_DOMAIN, "bench")
    dns = startDNS(key)
    print(f"signing {args.messages} messages ...", flush=True)
    data = messages(key, args.messages, args.size)
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    try:
        for round in range(args.rounds):
            for mode in MODES if round % 2 == 0 else reversed(list(MODES)):
                spool = os.path.join(root, f"{mode.replace(' ', '-')}-{round}")
                node = Node(mode, spool, dns, spool + ".log")
                try:
                    send(node.port, 1, data[:20])  # warm: imports, first DNS answers
                    cpu = cpuSeconds(node.process.pid)
                    seconds, accepted, problems = send(node.port, args.sessions, data)
                    cpuMs = (cpuSeconds(node.process.pid) - cpu) * 1000 / max(accepted, 1)
                finally:
                    node.stop()
                if accepted != len(data):
                    print(f"  {mode}: only {accepted}/{len(data)} accepted: {problems}")
                rate = accepted / seconds
                results[mode].append((rate, cpuMs))
                print(
                    f"  round {round + 1} {mode:>15}: {rate:7.0f} msgs/s, {cpuMs:5.2f} ms CPU/msg"
                )
                shutil.rmtree(spool, ignore_errors=True)
    finally:
        reactor.callFromThread(reactor.stop)
        if args.spool_root is None:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\n{args.sessions} sessions, {args.messages} messages of {args.size} octets, medians:")
    print(f"{'mode':>15}  {'msgs/s':>7}  {'ms CPU/msg':>10}")
    medians = {}
    for mode, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        medians[mode] = (rate, cpu)
        print(f"{mode:>15}  {rate:7.0f}  {cpu:10.2f}")
    off, on = medians["checks off"], medians["SPF+DKIM+DMARC"]
    print(
        f"SPF+DKIM+DMARC / off: {on[0] / off[0]:.2f}x msgs/s, "
        f"{on[1] - off[1]:+.2f} ms CPU per message"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
