"""
The servers under test, each started on a loopback port with its storage on
its own fresh ext4 image, and the bookkeeping that guarantees every process
and mount the benchmark makes is undone at the end.

L{Bench} owns the work directory, the images and the processes (it writes
them to C{pids} and C{mounts} files there, so C{bench/run}'s EXIT trap can
clean up even if Python is killed).  Each server class knows how to start,
stop, count what it stored, and wait until its queue has drained.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import procfs

__all__ = [
    "BENCH",
    "Bench",
    "Server",
    "GopherPost",
    "Postfix",
    "Aiosmtpd",
    "SmtpSink",
    "PostfixRelay",
    "freePort",
    "SENDER",
    "LOCAL_RECIPIENT",
]

BENCH = os.path.dirname(os.path.abspath(__file__))

#: Sender and recipient used by every throughput run: a local domain for
#: GopherPost, so nothing is relayed.
SENDER = "bench@bench.test"
LOCAL_RECIPIENT = "user@bench.test"

#: A loopback port where no DNS server listens.
DEAD_DNS = "127.0.0.1:9"


def freePort(host: str = "127.0.0.1", udp: bool = False) -> int:
    """
    A TCP port (and, with C{udp}, the same UDP port) free a moment ago.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if not udp:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
            return port
        except OSError:
            continue


def waitPort(port: int, timeout: float, host: str = "127.0.0.1", alive=None) -> None:
    """
    Wait until C{host:port} accepts a connection.

    @param alive: called while waiting; returns false if the server died.
    @raise RuntimeError: on time-out or death.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError:
            if alive is not None and not alive():
                raise RuntimeError(f"server for {host}:{port} exited during start-up") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.1)


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """
    Run a short command, raising on failure, with its output captured.
    """
    kwargs.setdefault("timeout", 600)
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({result.returncode}): "
            + result.stdout.decode(errors="replace")[-2000:]
        )
    return result


class Bench:
    """
    The work directory, images and processes of one benchmark run.

    @param work: a fresh directory (made by C{bench/run}).
    @param venv: the virtual environment with GopherPost and aiosmtpd.
    @param directIO: whether the loop devices under the images use direct
        I/O (see L{image}).
    """

    def __init__(self, work: str, venv: str, directIO: bool = True) -> None:
        self.work = work
        self.directIO = directIO
        self.venv = venv
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        # mktemp -d makes it 0700: Postfix's unprivileged daemons must reach
        # their queue and data directories below it.
        os.chmod(work, 0o755)
        self.processes: list[subprocess.Popen] = []
        self.mounts: list[str] = []

    def python(self) -> str:
        """
        The virtual environment's interpreter.
        """
        return os.path.join(self.venv, "bin", "python")

    # Images

    def image(self, name: str, size: str = "3G", inodes: int | None = None) -> str:
        """
        Make, format and loop-mount a fresh ext4 image; return the mount
        point.

        @param size: the image's size, as C{fallocate -l} takes it.
        @param inodes: how many inodes to make (C{mkfs.ext4 -N}); L{None}
            for mkfs's default, one per 16 KiB (196,608 for 3 GiB).

        The image file is allocated up front, and (with C{directIO}) its loop
        device reads and writes it with direct I/O, so the image behaves like
        a disk of its own: its writes and syncs go to the machine's disk
        without passing through the page cache and journal of the file
        system holding the image files.  Through that file system (the
        default of C{mount -o loop}) every sync of the image also syncs
        there, and that file system slows down as the benchmark churns it
        (see BENCHMARKING.md), so results drifted more with the order of
        runs.
        """
        path = os.path.join(self.work, f"{name}.img")
        mountPoint = os.path.join(self.work, "mnt", name)
        os.makedirs(mountPoint)
        run(["fallocate", "-l", size, path])
        mkfs = ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"]
        if inodes is not None:
            mkfs += ["-N", str(inodes)]
        run(mkfs + [path])
        with open(os.path.join(self.work, "mounts"), "a") as f:
            f.write(mountPoint + "\n")
        run(["mount", "-o", "loop", path, mountPoint])
        self.mounts.append(mountPoint)
        if self.directIO:
            device = subprocess.run(
                ["findmnt", "-n", "-o", "SOURCE", mountPoint], stdout=subprocess.PIPE, text=True
            ).stdout.strip()
            run(["losetup", "--direct-io=on", device])
        return mountPoint

    def unmountAll(self) -> None:
        """
        Unmount every image (lazily if busy) and delete the image files.
        """
        for mountPoint in reversed(self.mounts):
            for _attempt in range(10):
                if (
                    subprocess.run(["umount", mountPoint], stderr=subprocess.DEVNULL).returncode
                    == 0
                ):
                    break
                time.sleep(0.5)
            else:
                subprocess.run(["umount", "-l", mountPoint])
        self.mounts = []
        for name in os.listdir(self.work):
            if name.endswith(".img"):
                os.unlink(os.path.join(self.work, name))

    # Processes

    def register(self, pid: int, name: str) -> None:
        """
        Remember a process (by id and start time) for the EXIT trap.
        """
        with open(os.path.join(self.work, "pids"), "a") as f:
            f.write(f"{pid} {procfs.startTime(pid)} {name}\n")

    def spawn(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdin=subprocess.DEVNULL,
        stdout=None,
    ) -> subprocess.Popen:
        """
        Start a long-running process in its own session, output to
        C{logs/NAME.log} unless C{stdout} is given.

        The output goes through a pipe to a separate C{cat} that writes the
        file, as a daemon's output goes to journald under systemd (and as
        Postfix logs through postlogd): the server's log writes cost it a
        pipe write, not a file append that can wait on the journal of the
        file system the benchmark's images live on.
        """
        writer = None
        if stdout is None:
            with open(os.path.join(self.logs, f"{name}.log"), "ab") as logFile:
                writer = subprocess.Popen(
                    ["cat"], stdin=subprocess.PIPE, stdout=logFile, start_new_session=True
                )
            self.register(writer.pid, f"{name}-log")
            self.processes.append(writer)
            stdout = writer.stdin
        process = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not subprocess.PIPE else None,
            start_new_session=True,
        )
        if writer is not None:
            writer.stdin.close()  # the server holds the only write end now
        self.register(process.pid, name)
        self.processes.append(process)
        return process

    @staticmethod
    def terminate(process: subprocess.Popen, grace: float = 15.0) -> None:
        """
        SIGTERM one process we started, SIGKILL after C{grace} seconds.
        """
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)

    def stopAll(self) -> None:
        """
        Stop every process still running that this object started.
        """
        for process in reversed(self.processes):
            if process.args == ["cat"]:
                # A log writer: it ends by itself once its server has.
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            self.terminate(process)

    def environment(self, **extra: str) -> dict[str, str]:
        """
        A minimal environment for a child process.
        """
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": self.work}
        env.update(extra)
        return env


class Server:
    """
    One server under test.

    @ivar name: short name used in tables and JSON.
    @ivar port: its SMTP port on 127.0.0.1.
    @ivar mount: the mount point of its image, or L{None}.
    """

    name = "server"
    description = ""
    host = "127.0.0.1"

    def __init__(self, bench: Bench, name: str | None = None) -> None:
        self.bench = bench
        if name:
            self.name = name
        self.port = freePort()
        self.mount: str | None = None
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """
        Start the server and wait until it accepts connections.
        """
        raise NotImplementedError

    def root(self) -> int:
        """
        The process whose tree is measured.
        """
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        """
        Whether the server's root process still runs.
        """
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """
        Stop the server and everything it started.
        """
        if self.process is not None:
            self.bench.terminate(self.process)

    def stored(self) -> int | None:
        """
        How many messages it has stored (or handled) so far; L{None} if it
        cannot tell.
        """
        return None

    def settle(self, expected: int | None, timeout: float) -> bool:
        """
        Wait until the work caused by accepted mail is finished.

        @return: whether it finished in time.
        """
        return True

    def syncStorage(self) -> None:
        """
        Write back whatever the server left dirty on its image (outside the
        measured time), so it does not slow the next server's run.
        """
        if self.mount:
            subprocess.run(["sync", "-f", self.mount], timeout=120)


def _countSuffix(directory: str, suffix: str) -> int:
    count = 0
    try:
        dates = [e.path for e in os.scandir(directory) if e.is_dir() and e.name[:1].isdigit()]
    except FileNotFoundError:
        return 0
    for date in dates:
        with os.scandir(date) as entries:
            count += sum(1 for e in entries if e.name.endswith(suffix))
    return count


class GopherPost(Server):
    """
    C{twistd -n gopherpost} from the benchmark's virtual environment, spool
    on its own image.
    """

    name = "gopherpost"
    description = "GopherPost (twistd -n gopherpost, spool fsynced per message)"

    def __init__(
        self,
        bench: Bench,
        name: str | None = None,
        mount: str | None = None,
        spoolName: str = "spool",
        **overrides: str,
    ) -> None:
        Server.__init__(self, bench, name)
        self.mount = mount or bench.image(self.name)
        self.spool = os.path.join(self.mount, spoolName)
        self.overrides = overrides

    def environ(self) -> dict[str, str]:
        """
        The C{SMTP_*} variables it runs with.
        """
        env = {
            "SMTP_PORT": str(self.port),
            "SMTP_LISTEN_ADDR": "127.0.0.1",
            "SMTP_HOSTNAME": "mx.bench.test",
            "SMTP_LOCAL_DOMAINS": "bench.test",
            "SMTP_ALLOW_NETWORKS": "127.0.0.1/32",
            "SMTP_QUEUE_PATH": self.spool,
            "SMTP_HEALTH_DISABLE": "true",
            "SMTP_TLS_DISABLE": "true",
            "SMTP_DNS_SERVERS": DEAD_DNS,
            # 100 sessions and 5,000 idle ones all come from 127.0.0.1.
            "SMTP_MAX_CONNECTIONS": "10000",
            "SMTP_MAX_CONNECTIONS_PER_IP": "10000",
            # The relay benchmark counts the .relayed files: retention must
            # not remove them while it counts (older trees ignore this).
            "SMTP_KEEP_DELIVERED": "1d",
        }
        # e.g. SMTP_WORKERS=2 bench/run ... compares the process models.
        if os.environ.get("SMTP_WORKERS"):
            env["SMTP_WORKERS"] = os.environ["SMTP_WORKERS"]
        env.update(self.overrides)
        return env

    def start(self) -> None:
        cwd = os.path.join(self.bench.work, self.name)
        os.makedirs(cwd, exist_ok=True)  # no .env here
        self.process = self.bench.spawn(
            self.name,
            [
                os.path.join(self.bench.venv, "bin", "twistd"),
                "--nodaemon",
                "--pidfile=",
                "gopherpost",
            ],
            env=self.bench.environment(**self.environ()),
            cwd=cwd,
        )
        waitPort(self.port, 60, alive=self.alive)

    def stored(self) -> int:
        return _countSuffix(self.spool, ".envelope")

    def relayed(self) -> int:
        """
        How many messages the relay has finished (C{.relayed} state files).
        """
        return _countSuffix(self.spool, ".relayed")


class Aiosmtpd(Server):
    """
    C{python -m aiosmtpd} with its own Maildir handler
    (C{aiosmtpd.handlers.Mailbox}: C{mailbox.Maildir.add}, which fsyncs
    each message file inline), Maildir on its own image.
    """

    name = "aiosmtpd"
    description = "aiosmtpd 1.4 -c aiosmtpd.handlers.Mailbox (Maildir, fsync inline)"

    def __init__(
        self,
        bench: Bench,
        name: str | None = None,
        mount: str | None = None,
        maildirName: str = "Maildir",
    ) -> None:
        Server.__init__(self, bench, name)
        self.mount = mount or bench.image(self.name)
        self.maildir = os.path.join(self.mount, maildirName)

    def start(self) -> None:
        self.process = self.bench.spawn(
            self.name,
            [
                self.bench.python(),
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                f"127.0.0.1:{self.port}",
                "-c",
                "aiosmtpd.handlers.Mailbox",
                self.maildir,
            ],
            env=self.bench.environment(),
            cwd=self.mount,
        )
        waitPort(self.port, 60, alive=self.alive)

    def stored(self) -> int:
        try:
            return len(os.listdir(os.path.join(self.maildir, "new")))
        except FileNotFoundError:
            return 0


class SmtpSink(Server):
    """
    Postfix's C{smtp-sink}: speaks SMTP, stores nothing.  The upper bound of
    what the client and the loopback can do.
    """

    name = "smtp-sink"
    description = "smtp-sink (no storage: protocol upper bound)"

    def __init__(
        self, bench: Bench, name: str | None = None, host: str = "127.0.0.1", backlog: int = 100
    ) -> None:
        Server.__init__(self, bench, name)
        self.host = host
        self.port = freePort(host)
        self.backlog = backlog

    def start(self) -> None:
        self.process = self.bench.spawn(
            self.name,
            ["smtp-sink", "-u", "nobody", f"{self.host}:{self.port}", str(self.backlog)],
            env=self.bench.environment(),
        )
        waitPort(self.port, 30, host=self.host, alive=self.alive)


class Postfix(Server):
    """
    A private Postfix instance (bench/postfix/*.cf): smtpd on a loopback
    port with Postfix's default process limit, the real queue on its own
    image (cleanup fsyncs every queue file before the 250), then delivery to
    the discard transport.  A second smtpd service, with room for one
    process per session, serves the idle-connection test.
    """

    name = "postfix"
    description = "Postfix 3.7 (real queue, fsync, discard transport)"

    def __init__(
        self,
        bench: Bench,
        name: str | None = None,
        idleProcesses: int = 5100,
        overrides: dict[str, str] | None = None,
    ) -> None:
        Server.__init__(self, bench, name)
        self.idlePort = freePort()
        #: How the idle service's smtpd processes are named (smtpd -n NAME).
        self.idleService = f"-n 127.0.0.1:{self.idlePort} "
        self.mount = bench.image(self.name)
        self.config = os.path.join(bench.work, f"{self.name}-etc")
        self.queue = os.path.join(self.mount, "queue")
        self.data = os.path.join(self.mount, "data")
        self.logDirectory = os.path.join(bench.logs, self.name)
        self.maillog = os.path.join(self.logDirectory, "maillog")
        self._logOffset = 0
        self._sent = 0
        values = {
            "@QUEUE@": self.queue,
            "@DATA@": self.data,
            "@LOG@": self.maillog,
            "@LOGDIR@": self.logDirectory,
            "@PORT@": f"127.0.0.1:{self.port}",
            "@IDLE_PORT@": f"127.0.0.1:{self.idlePort}",
            "@IDLE_MAXPROC@": str(idleProcesses),
        }
        os.makedirs(self.config)
        os.makedirs(self.logDirectory)
        os.makedirs(self.queue)
        os.makedirs(self.data)
        shutil.chown(self.data, "postfix")
        for name in ("main.cf", "master.cf"):
            with open(os.path.join(BENCH, "postfix", name)) as f:
                text = f.read()
            for key, value in values.items():
                text = text.replace(key, value)
            if name == "main.cf" and overrides:
                text = _overrideParameters(text, overrides)
            with open(os.path.join(self.config, name), "w") as f:
                f.write(text)
        self._master: int | None = None

    def _postfix(self, command: str) -> None:
        # postfix(1) fails silently without a terminal: give it one.
        run(
            ["script", "-qc", f"postfix -c {self.config} {command}", "/dev/null"],
            env=self.bench.environment(),
            timeout=120,
        )

    def start(self) -> None:
        self._postfix("start")
        pidFile = os.path.join(self.queue, "pid", "master.pid")
        deadline = time.monotonic() + 30
        while True:
            try:
                with open(pidFile) as f:
                    self._master = int(f.read().strip())
                break
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError("Postfix did not start: see " + self.maillog) from None
                time.sleep(0.1)
        self.bench.register(self._master, "postfix-master")
        waitPort(self.port, 30, alive=self.alive)

    def root(self) -> int:
        assert self._master is not None
        return self._master

    def alive(self) -> bool:
        return self._master is not None and os.path.exists(f"/proc/{self._master}")

    def stop(self) -> None:
        if not self.alive():
            return
        pids = [(pid, procfs.startTime(pid)) for pid in procfs.tree(self._master)]
        try:
            self._postfix("stop")
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"postfix stop: {e}", file=sys.stderr)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            procfs.startTime(pid) == start for pid, start in pids
        ):
            time.sleep(0.2)
        for pid, start in pids:
            if procfs.startTime(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def stored(self) -> int:
        """
        Messages delivered to the discard transport (C{status=sent} lines).
        """
        try:
            with open(self.maillog, "rb") as f:
                f.seek(self._logOffset)
                chunk = f.read()
        except FileNotFoundError:
            return 0
        end = chunk.rfind(b"\n") + 1
        self._sent += chunk[:end].count(b"status=sent")
        self._logOffset += end
        return self._sent

    def _queueEmpty(self) -> bool:
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(os.path.join(self.queue, sub)):
                if files:
                    return False
        return True

    def settle(self, expected: int | None, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queueEmpty() and (expected is None or self.stored() >= expected):
                return True
            time.sleep(0.1)
        return False


def _overrideParameters(text: str, overrides: dict[str, str]) -> str:
    """
    C{main.cf} text with each parameter of C{overrides} set to its value
    (in place where the text sets it, else appended).
    """
    lines = text.splitlines()
    left = dict(overrides)
    for index, line in enumerate(lines):
        name = line.split("=", 1)[0].strip()
        if "=" in line and not line.startswith(("#", " ", "\t")) and name in left:
            lines[index] = f"{name} = {left.pop(name)}"
    lines += [f"{name} = {value}" for name, value in left.items()]
    return "\n".join(lines) + "\n"


class PostfixRelay(Postfix):
    """
    A private Postfix instance relaying everything to the relay benchmark's
    sink, as GopherPost's relay does: smtpd on a loopback port, the real
    queue on its own image, the smtp client finding the sink through the
    benchmark's loopback DNS server (MX, then A), on the sink's port.

    Postfix resolves through C{/etc/resolv.conf}, which takes no port: the
    instance runs in a mount namespace of its own where a copy naming the
    benchmark's DNS server (port 53 on a loopback address) is bind-mounted
    over it.  Nothing outside that namespace sees the copy.

    @param sinkPort: where the sink listens (on the MX host's address).
    @param nameserver: the loopback address of the DNS server (port 53).
    """

    name = "postfix-relay"
    description = "Postfix 3.7 relaying (real queue, smtp client, MX through loopback DNS)"

    def __init__(
        self, bench: Bench, sinkPort: int, nameserver: str, name: str | None = None
    ) -> None:
        Postfix.__init__(
            self,
            bench,
            name,
            idleProcesses=10,
            overrides={
                "default_transport": "smtp",
                "relay_transport": "smtp",
                "local_transport": "smtp",
                "virtual_transport": "smtp",
                "disable_dns_lookups": "no",
                "smtp_dns_support_level": "enabled",
                "smtp_tcp_port": str(sinkPort),
                "smtp_tls_security_level": "none",
            },
        )
        self.resolvConf = os.path.join(bench.work, f"{self.name}-resolv.conf")
        with open(self.resolvConf, "w") as f:
            f.write(f"nameserver {nameserver}\noptions attempts:2 timeout:2\n")

    def _postfix(self, command: str) -> None:
        if command != "start":
            Postfix._postfix(self, command)
            return
        inner = (
            f"mount --bind {self.resolvConf} /etc/resolv.conf"
            f" && exec script -qc 'postfix -c {self.config} start' /dev/null"
        )
        run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
            env=self.bench.environment(),
            timeout=120,
        )

    def relayed(self) -> int:
        """
        Messages the smtp client delivered (C{status=sent} lines).
        """
        return self.stored()

    def outcomes(self) -> tuple[int, int]:
        """
        Recipients delivered and not (deferred or bounced), from its log.
        """
        try:
            with open(self.maillog, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            return 0, 0
        return text.count(b"status=sent"), text.count(b"status=deferred") + text.count(
            b"status=bounced"
        )
