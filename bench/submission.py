"""
What authenticated submission costs (issue 15), against a real
C{twistd -n gopherpost} from this checkout, in one run:

  1. authenticated messages per second at 20 concurrent sessions over the
     submissions listener (implicit TLS), one session per message, so one
     scrypt check (N=2^15, r=8, p=1, today's parameters) per message;
  2. the time one plain SMTP session on C{SMTP_LISTEN} takes (EHLO, MAIL,
     RCPT, DATA of 1 KiB, QUIT), idle, and while 10 clients hammer wrong
     passwords on the submissions listener, in interleaved rounds.  The
     hammering clients each try again as soon as they are answered (the
     server answers a failure after its 1 s delay and closes after 3), and
     the lockouts are off, so that every attempt costs a real scrypt check:
     the worst case.  The normal session should stay within noise of idle:
     the checks run in their own two threads, never on the reactor.

    python3 bench/submission.py                    # the defaults below
    python3 bench/submission.py --messages 400 --rounds 5 --samples 40

Run from the repository root (any user).  The spool is a temporary
directory (C{--spool DIR} to put it on an ext4 image of its own, see
shared/BENCHMARKING.md); the server's log is kept next to it.  Prints
msgs/s with the server's CPU seconds per message, and per round the
median and 95th percentile session time, idle and under attack.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gopherpost.auth.passwords import hashPassword  # noqa: E402

USER = "bench@bench.test"
PASSWORD = "correct horse battery staple"
BODY = b"Subject: bench\r\n\r\n" + (b"x" * 78 + b"\r\n") * 12


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpuSeconds(pid: int) -> float:
    """
    User + system CPU seconds of a process.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Server:
    """
    C{twistd -n gopherpost} with an SMTP listener and a submissions
    listener, one user, lockouts off.
    """

    def __init__(self, spool: str) -> None:
        self.smtp, self.submissions = freePort(), freePort()
        os.makedirs(os.path.join(spool, ".gopherpost"), exist_ok=True)
        with open(os.path.join(spool, ".gopherpost", "users"), "w") as f:
            f.write(f"{USER} {hashPassword(PASSWORD)}\n")
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": ROOT,
            "SMTP_HOSTNAME": "mx.bench.test",
            "SMTP_LOCAL_DOMAINS": "bench.test",
            "SMTP_QUEUE_PATH": spool,
            "SMTP_LISTEN": f"tcp:{self.smtp}:interface=127.0.0.1",
            "SMTP_SUBMISSIONS_LISTEN": f"tcp:{self.submissions}:interface=127.0.0.1",
            "SMTP_ALLOW_NETWORKS": "127.0.0.0/8",
            "SMTP_RELAY_NETWORKS": "127.0.0.2/32",
            "SMTP_HEALTH_DISABLE": "true",
            "SMTP_DNS_SERVERS": f"127.0.0.1:{freePort()}",
            "SMTP_MAX_CONNECTIONS": "10000",
            "SMTP_MAX_CONNECTIONS_PER_IP": "10000",
            "SMTP_SENDER_AUTH": "false",
            "SMTP_AUTH_LOCKOUT_FAILURES": "0",
            "SMTP_AUTH_USER_LOCKOUT_FAILURES": "0",
        }
        self.logPath = spool.rstrip("/") + ".log"
        self._log = open(self.logPath, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "--nodaemon",
                "--pidfile=",
                "gopherpost",
            ],
            env=environ,
            cwd=spool,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        for port in (self.smtp, self.submissions):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise SystemExit(f"the server did not start; see {self.logPath}") from None
                    time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def submitOne(port: int) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=60, context=unverified()) as client:
        client.ehlo("client.bench.test")
        client.login(USER, PASSWORD)
        client.sendmail(USER, ["rcpt@bench.test"], BODY)


def authenticatedThroughput(server: Server, messages: int, sessions: int) -> tuple[float, float]:
    """
    @return: messages per second, and the server's CPU seconds per message.
    """
    before = cpuSeconds(server.process.pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(sessions) as pool:
        for future in [pool.submit(submitOne, server.submissions) for _ in range(messages)]:
            future.result()
    elapsed = time.perf_counter() - started
    return messages / elapsed, (cpuSeconds(server.process.pid) - before) / messages


def plainSession(port: int) -> float:
    """
    One SMTP session with one 1 KiB message; its duration in seconds.
    """
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("client.bench.test")
        client.sendmail("sender@bench.test", ["rcpt@bench.test"], BODY)
    return time.perf_counter() - started


class Hammer:
    """
    Clients that try wrong passwords on the submissions listener until
    stopped.
    """

    def __init__(self, port: int, clients: int) -> None:
        self._port = port
        self._stop = threading.Event()
        self.attempts = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with smtplib.SMTP_SSL(
                    "127.0.0.1", self._port, timeout=60, context=unverified()
                ) as client:
                    client.ehlo("attacker.bench.test")
                    while not self._stop.is_set():
                        code, _ = client.docmd("AUTH", "PLAIN AGJlbmNoQGJlbmNoLnRlc3QAd3Jvbmc=")
                        with self._lock:
                            self.attempts += 1
                        if code == 421:
                            break
            except (smtplib.SMTPException, OSError):
                pass

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300, help="authenticated messages")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions")
    parser.add_argument("--hammers", type=int, default=10, help="clients hammering passwords")
    parser.add_argument("--rounds", type=int, default=3, help="idle/attack round pairs")
    parser.add_argument("--samples", type=int, default=30, help="plain sessions per round")
    parser.add_argument("--spool", help="the spool directory (default: a temporary one)")
    args = parser.parse_args()

    spool = args.spool or tempfile.mkdtemp(prefix="gopherpost-bench-submission-")
    server = Server(os.path.abspath(spool))
    try:
        # Warm up: TLS, the first scrypt, the spool's directories.
        submitOne(server.submissions)
        plainSession(server.smtp)
        rate, cpu = authenticatedThroughput(server, args.messages, args.sessions)
        print(
            f"authenticated submission, {args.sessions} sessions, one AUTH PLAIN per message: "
            f"{rate:.1f} msgs/s, {cpu * 1000:.1f} ms server CPU per message"
        )
        print(f"plain SMTP session (1 KiB), {args.samples} per round, in ms:")
        print("round  idle median  idle p95  attack median  attack p95  attempts/s")
        idleAll: list[float] = []
        attackAll: list[float] = []
        for number in range(1, args.rounds + 1):
            idle = [plainSession(server.smtp) for _ in range(args.samples)]
            hammer = Hammer(server.submissions, args.hammers)
            started = time.monotonic()
            time.sleep(3)  # every hammering client in its exchanges
            attack: list[float] = []
            # At least a few seconds of attack, however fast the sessions.
            while len(attack) < args.samples or time.monotonic() - started < 8:
                attack.append(plainSession(server.smtp))
            attempts = hammer.attempts / (time.monotonic() - started)
            hammer.stop()
            idleAll += idle
            attackAll += attack
            print(
                f"{number:5d}  {statistics.median(idle) * 1000:11.2f}  "
                f"{percentile(idle, 0.95) * 1000:8.2f}  "
                f"{statistics.median(attack) * 1000:13.2f}  "
                f"{percentile(attack, 0.95) * 1000:10.2f}  {attempts:10.1f}"
            )
        ratio = statistics.median(attackAll) / statistics.median(idleAll)
        print(f"median under attack / idle: {ratio:.2f}")
    finally:
        server.stop()
        print(f"server log: {server.logPath}")


if __name__ == "__main__":
    main()
