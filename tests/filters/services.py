"""
The real filters from Debian, started on loopback ports with
configurations written here, once per test process.

    rspamd          its normal worker (HTTP /checkv2) and its proxy in milter
                    mode, scanning by itself; test rules in rspamd.local.lua
    spamd           SpamAssassin, local tests only (-L)
    clamd           with a one-line .ndb signature database (no freshclam):
                    the EICAR test string is "GopherPost.Test.Signature"
    clamav-milter   in front of that clamd (shared), or private instances
                    for tests that stop or kill one
    opendkim        signing for example.test (mode sv), a key made here

Every name they look up goes to a DNS stub (L{tests.filters.dnsstub}) that
answers NXDOMAIN: nothing leaves the machine.  The first test that needs a
service starts it (L{shared}); the others reuse it; all are stopped when the
process exits.  A missing program is an error with the package to install,
never a skip.

rspamd compiles its Hyperscan databases on its first start (a minute or
more on a busy machine); they are kept in L{CACHE} (C{GOPHERPOST_TEST_CACHE},
default C{/var/tmp/gopherpost-tests}) so that later starts take seconds.
C{python3 -m tests.filters.services warm} fills the cache (C{services.sh}
runs it).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred

__all__ = [
    "CACHE",
    "EICAR",
    "GTUBE",
    "ClamavMilter",
    "Clamd",
    "DNSStub",
    "Daemon",
    "OpenDKIM",
    "Rspamd",
    "Spamd",
    "clamavMilter",
    "clamd",
    "dnsStub",
    "freePort",
    "opendkim",
    "rspamd",
    "shared",
    "spamd",
]

CACHE = os.environ.get("GOPHERPOST_TEST_CACHE", "/var/tmp/gopherpost-tests")

#: SpamAssassin's and rspamd's test string.
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

#: The anti-virus test string (matched by our local signature).
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

#: The name clamd reports for it.
SIGNATURE = "GopherPost.Test.Signature"


def freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exchange(port: int, data: bytes, timeout: float = 0.5) -> bytes:
    """
    Send C{data}, read until the peer closes or C{timeout}.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            if data:
                s.sendall(data)
            chunks = []
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
                if not data:
                    break
            return b"".join(chunks)
    except OSError:
        return b""


def _dieWithParent() -> None:
    """
    In the child before exec: SIGTERM when the test process dies, even
    without running its exit handlers (Linux prctl PR_SET_PDEATHSIG).
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Daemon:
    """
    One program we start, in its own directory and process group.

    @ivar package: the Debian package that has it, for the error message.
    """

    name = "daemon"
    program = ""
    package = ""
    startTimeout = 60.0

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix=f"gopherpost-{self.name}-")
        os.chmod(self.directory, 0o755)
        self.logPath = os.path.join(self.directory, "output.log")
        self.process: subprocess.Popen[bytes] | None = None

    def path(self, *names: str) -> str:
        return os.path.join(self.directory, *names)

    def write(self, name: str, text: str, mode: int = 0o644) -> str:
        path = self.path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def configure(self) -> None:
        """
        Write the configuration (before the start).
        """

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def binary(self) -> str:
        found = shutil.which(self.program) or shutil.which(self.program, path="/usr/sbin:/sbin")
        if found is None:
            raise RuntimeError(
                f"{self.program} is not installed (Debian: apt-get install {self.package}); "
                "the content filter tests need it: run tests/filters/services.sh"
            )
        return found

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @defer.inlineCallbacks
    def start(self) -> Any:
        """
        Start it and wait (bounded) until it answers.

        @raise RuntimeError: when it is missing or does not come up.
        """
        binary = self.binary()
        self.configure()
        command = self.command()
        command[0] = binary
        log = open(self.logPath, "ab")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.directory,
            start_new_session=True,
            preexec_fn=_dieWithParent,
        )
        log.close()
        waited = 0.0
        while waited < self.startTimeout:
            if self.ready():
                return self
            if not self.running:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
            waited += 0.1
        self.stop()
        raise RuntimeError(
            f"{self.name} did not start in {self.startTimeout:g} s; its log:\n{self.logTail()}"
        )

    def logTail(self, lines: int = 30) -> str:
        texts = []
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(".log"):
                with open(self.path(name), "rb") as f:
                    tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
                texts.append(f"--- {name}\n" + "\n".join(tail))
        return "\n".join(texts)

    def pause(self) -> None:
        """
        Stop it (SIGSTOP): connections are still accepted, nothing is
        answered.
        """
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """
        Kill it as a crash would (its whole process group).
        """
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGCONT)
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        # Workers that outlived their parent.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class DNSStub(Daemon):
    """
    NXDOMAIN for every name (L{tests.filters.dnsstub}).
    """

    name = "dnsstub"
    program = "python3"
    package = "python3"

    def __init__(self) -> None:
        super().__init__()
        self.port = freePort()

    def binary(self) -> str:
        return sys.executable

    def command(self) -> list[str]:
        return ["python", os.path.join(os.path.dirname(__file__), "dnsstub.py"), str(self.port)]

    def ready(self) -> bool:
        query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x00\x00\x01\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(query, ("127.0.0.1", self.port))
                return s.recv(512)[:2] == b"\x12\x34"
            except OSError:
                return False


_RSPAMD_CONF = """\
.include "$CONFDIR/common.conf"
options {{
    pidfile = "{dir}/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
    type = "file";
    filename = "{dir}/rspamd.log";
    level = "info";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{http}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{milter}";
    milter = yes;
    timeout = 120s;
    count = 1;
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
    upstream "local" {{
        default = yes;
        self_scan = yes;
    }}
}}
"""

#: Rules the tests trigger by Subject (an action each).
_RSPAMD_RULES = """\
local function subjectHas(task, text)
  local subject = task:get_subject() or ''
  return subject:find(text, 1, true) ~= nil
end

rspamd_config:register_symbol{
  name = 'GOPHERPOST_TEST_ADD_HEADER', score = 6.0, group = 'gopherpost',
  callback = function(task) return subjectHas(task, 'gopherpost-add-header') end,
}
rspamd_config:register_symbol{
  name = 'GOPHERPOST_TEST_REWRITE_SUBJECT', score = 11.0, group = 'gopherpost',
  callback = function(task) return subjectHas(task, 'gopherpost-rewrite-subject') end,
}
rspamd_config:register_symbol{
  name = 'GOPHERPOST_TEST_SOFT_REJECT', type = 'prefilter', priority = 10,
  callback = function(task)
    if subjectHas(task, 'gopherpost-soft-reject') then
      task:set_pre_result('soft reject', 'Soft reject test')
    end
  end,
}
rspamd_config:register_symbol{
  name = 'GOPHERPOST_TEST_DISCARD', type = 'prefilter', priority = 10,
  callback = function(task)
    if subjectHas(task, 'gopherpost-discard') then
      task:set_pre_result('discard', 'Discard test')
    end
  end,
}
"""


class Rspamd(Daemon):
    """
    rspamd: L{http} is the normal worker, L{milter} the proxy in milter
    mode.
    """

    name = "rspamd"
    program = "rspamd"
    package = "rspamd"
    startTimeout = 300.0

    def __init__(self, dns: DNSStub) -> None:
        super().__init__()
        self.dns = dns
        self.http = freePort()
        self.milter = freePort()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def configure(self) -> None:
        cache = os.path.join(CACHE, "rspamd-hs")
        os.makedirs(cache, exist_ok=True)
        os.makedirs(self.path("db"), exist_ok=True)
        self.write(
            "rspamd.conf",
            _RSPAMD_CONF.format(dir=self.directory, http=self.http, milter=self.milter),
        )
        self.write(
            "local.d/options.inc",
            f'dns {{ nameserver = ["127.0.0.1:{self.dns.port}"]; timeout = 1s; retransmits = 1; }}\n'
            f'hs_cache_dir = "{cache}/";\n',
        )
        self.write(
            "local.d/milter_headers.conf",
            'use = ["x-spamd-result", "x-rspamd-queue-id", "x-spam-status"];\n'
            "skip_local = false;\nskip_authenticated = false;\n",
        )
        self.write(
            "local.d/actions.conf",
            # Clean test messages score about 2 (no rDNS, no SPF/DKIM).
            "reject = 15;\nrewrite_subject = 12;\nadd_header = 6;\ngreylist = null;\n"
            # discard: for the discard test rule (a forced action only).
            'discard { flags = ["no_threshold"]; }\n'
            'subject = "***SPAM*** %s";\n',
        )
        # Modules that only add time (and lookups) here; hfilter would
        # score every loopback test client as a bad host.
        for module in ("rbl", "fuzzy_check", "asn", "hfilter", "phishing", "neural", "replies"):
            self.write(f"local.d/{module}.conf", "enabled = false;\n")
        self.write("rspamd.local.lua", _RSPAMD_RULES)

    def command(self) -> list[str]:
        command = ["rspamd", "-f", "-c", self.path("rspamd.conf")]
        for name, value in [
            ("LOCAL_CONFDIR", self.directory),
            ("DBDIR", self.path("db")),
            ("RUNDIR", self.directory),
            ("LOGDIR", self.directory),
        ]:
            command += ["--var", f"{name}={value}"]
        if os.getuid() == 0:
            command += ["-u", "root", "-g", "root", "-i"]
        return command

    def ready(self) -> bool:
        reply = _exchange(self.http, b"GET /ping HTTP/1.0\r\n\r\n")
        return b"pong" in reply and _accepts(self.milter)


class Spamd(Daemon):
    """
    SpamAssassin's spamd, local tests only.
    """

    name = "spamd"
    program = "spamd"
    package = "spamd spamassassin"

    def __init__(self) -> None:
        super().__init__()
        self.port = freePort()

    def configure(self) -> None:
        # Our site configuration replaces /etc/spamassassin: its plugin
        # loaders (*.pre) come along.
        os.makedirs(self.path("site"), exist_ok=True)
        for name in os.listdir("/etc/spamassassin"):
            if name.endswith(".pre"):
                shutil.copy(os.path.join("/etc/spamassassin", name), self.path("site", name))
        self.write(
            "site/local.cf",
            "required_score 5.0\nuse_bayes 0\nbayes_auto_learn 0\n"
            "skip_rbl_checks 1\ndns_available no\nreport_safe 1\n",
        )
        os.makedirs(self.path("home"), exist_ok=True)
        os.chmod(self.path("home"), 0o777)

    def command(self) -> list[str]:
        command = [
            "spamd",
            "--local",
            f"--listen=127.0.0.1:{self.port}",
            "--allowed-ips=127.0.0.1",
            "--max-children=2",
            "--min-children=1",
            f"--pidfile={self.path('spamd.pid')}",
            f"--siteconfigpath={self.path('site')}",
            f"--helper-home-dir={self.path('home')}",
            "--syslog=stderr",
        ]
        if os.getuid() == 0:
            command.append("--username=nobody")
        return command

    def ready(self) -> bool:
        return b"PONG" in _exchange(self.port, b"PING SPAMC/1.5\r\n\r\n")


class Clamd(Daemon):
    """
    clamd with one local signature (the EICAR string).
    """

    name = "clamd"
    program = "clamd"
    package = "clamav-daemon"

    def __init__(self) -> None:
        super().__init__()
        self.port = freePort()

    def configure(self) -> None:
        self.write("db/gopherpost-test.ndb", f"{SIGNATURE}:0:*:{EICAR.hex()}\n")
        self.write(
            "clamd.conf",
            f"TCPSocket {self.port}\nTCPAddr 127.0.0.1\nDatabaseDirectory {self.path('db')}\n"
            f"Foreground yes\nLogFile {self.path('clamd.log')}\n"
            f"TemporaryDirectory {self.directory}\n",
        )

    def command(self) -> list[str]:
        return ["clamd", "-c", self.path("clamd.conf")]

    def ready(self) -> bool:
        return b"PONG" in _exchange(self.port, b"zPING\x00")


class ClamavMilter(Daemon):
    """
    clamav-milter in front of a clamd (or of nothing: it then answers
    tempfail, C{OnFail Defer}).
    """

    name = "clamav-milter"
    program = "clamav-milter"
    package = "clamav-milter"

    def __init__(self, clamdPort: int) -> None:
        super().__init__()
        self.port = freePort()
        self.clamdPort = clamdPort

    @property
    def milterAddress(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def configure(self) -> None:
        self.write(
            "clamav-milter.conf",
            f"MilterSocket inet:{self.port}@127.0.0.1\n"
            f"ClamdSocket tcp:127.0.0.1:{self.clamdPort}\n"
            f"Foreground yes\nLogFile {self.path('milter.log')}\n"
            "OnInfected Reject\nOnFail Defer\nAddHeader Replace\n"
            'RejectMsg "Virus found: %v"\n'
            f"TemporaryDirectory {self.directory}\n",
        )

    def command(self) -> list[str]:
        return ["clamav-milter", "-c", self.path("clamav-milter.conf")]

    def ready(self) -> bool:
        return _accepts(self.port)


class OpenDKIM(Daemon):
    """
    OpenDKIM signing for C{example.test} (selector C{gopherpost}) what
    127.0.0.1 sends, verifying the rest.
    """

    name = "opendkim"
    program = "opendkim"
    package = "opendkim"
    domain = "example.test"
    selector = "gopherpost"

    def __init__(self, canonicalization: str = "simple/simple") -> None:
        super().__init__()
        self.port = freePort()
        self.canonicalization = canonicalization
        self.publicKey = b""

    @property
    def milterAddress(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def configure(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.write(
            "keys/gopherpost.private",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ).decode("ascii"),
            0o600,
        )
        import base64

        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.publicKey = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
        self.write(
            "opendkim.conf",
            "Syslog no\nBackground no\nLogWhy yes\nMode sv\n"
            f"Socket inet:{self.port}@127.0.0.1\n"
            f"Domain {self.domain}\nSelector {self.selector}\n"
            f"KeyFile {self.path('keys', 'gopherpost.private')}\n"
            f"Canonicalization {self.canonicalization}\n"
            "InternalHosts 127.0.0.1\nRequireSafeKeys no\n"
            f"PidFile {self.path('opendkim.pid')}\n"
            + ("UserID root\n" if os.getuid() == 0 else ""),
        )

    def command(self) -> list[str]:
        return ["opendkim", "-f", "-x", self.path("opendkim.conf")]

    def ready(self) -> bool:
        return _accepts(self.port)

    def dnsTXT(self, name: bytes, timeout: int = 5) -> bytes | None:
        """
        A C{dnsfunc} for dkimpy: our key, for our selector only.
        """
        wanted = f"{self.selector}._domainkey.{self.domain}".encode()
        if name.rstrip(b".").lower() == wanted:
            return self.publicKey
        return None


class _Lazy:
    """
    A daemon started by the first test that asks for it.
    """

    def __init__(self, make: Callable[[], Deferred[Any]]) -> None:
        self._make = make
        self.daemon: Any = None
        self._waiting: list[Deferred[Any]] | None = None

    def get(self) -> Deferred[Any]:
        if self.daemon is not None and self.daemon.running:
            return defer.succeed(self.daemon)
        d: Deferred[Any] = Deferred()
        if self._waiting is not None:
            self._waiting.append(d)
            return d
        self._waiting = [d]

        def done(result: Any) -> None:
            waiting, self._waiting = self._waiting or [], None
            if isinstance(result, Daemon):
                self.daemon = result
            for w in waiting:
                if isinstance(result, Daemon):
                    w.callback(result)
                else:
                    w.errback(result)

        self._make().addBoth(done)
        return d


_shared: dict[str, _Lazy] = {}


def shared(name: str, make: Callable[[], Deferred[Any]]) -> Deferred[Any]:
    """
    The daemon called C{name}, started once by C{make} (which registers
    its cleanup).
    """
    if name not in _shared:
        _shared[name] = _Lazy(make)
    return _shared[name].get()


def started(daemon: Daemon) -> Deferred[Any]:
    """
    Start C{daemon}; it is stopped when the process exits.
    """
    atexit.register(daemon.cleanup)
    return daemon.start()


def dnsStub() -> Deferred[DNSStub]:
    return shared("dnsstub", lambda: started(DNSStub()))


def rspamd() -> Deferred[Rspamd]:
    def make() -> Deferred[Any]:
        return dnsStub().addCallback(lambda dns: started(Rspamd(dns)))

    return shared("rspamd", make)


def spamd() -> Deferred[Spamd]:
    return shared("spamd", lambda: started(Spamd()))


def clamd() -> Deferred[Clamd]:
    return shared("clamd", lambda: started(Clamd()))


def clamavMilter() -> Deferred[ClamavMilter]:
    """
    The shared clamav-milter (in front of the shared clamd).
    """
    return shared(
        "clamav-milter", lambda: clamd().addCallback(lambda c: started(ClamavMilter(c.port)))
    )


def privateClamavMilter(testCase: Any, clamdPort: int | None = None) -> Deferred[ClamavMilter]:
    """
    A clamav-milter for one test (which may stop or kill it), in front of
    the shared clamd, or of a port where nothing listens.
    """

    def make(port: int) -> Deferred[Any]:
        milter = ClamavMilter(port)
        testCase.addCleanup(milter.cleanup)
        return milter.start()

    if clamdPort is not None:
        return make(clamdPort)
    return clamd().addCallback(lambda c: make(c.port))


def opendkim() -> Deferred[OpenDKIM]:
    return shared("opendkim", lambda: started(OpenDKIM()))


def _warm() -> None:
    """
    Start rspamd once (filling the Hyperscan cache) and the others, then
    stop them.
    """

    @defer.inlineCallbacks
    def run(reactor: Any) -> Any:
        for name, get in [
            ("rspamd", rspamd),
            ("spamd", spamd),
            ("clamav-milter", clamavMilter),
            ("opendkim", opendkim),
        ]:
            daemon = yield get()
            print(f"{name}: started ({daemon.directory})")

    task.react(run)


if __name__ == "__main__":
    if sys.argv[1:] == ["warm"]:
        _warm()
    else:
        sys.exit("usage: python3 -m tests.filters.services warm")
