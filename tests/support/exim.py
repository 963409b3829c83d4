"""
A private Exim (Debian's exim4-daemon-light, unpacked by
C{tests/exim/provide.sh}) that relays everything to one loopback port: a
real client that uses CHUNKING (BDAT), DSN parameters and SMTPUTF8 when the
server offers them.

No daemon: a message is handed to Exim as an SMTP session on its standard
input (C{exim4 -bs}, as from C{127.0.0.1}), queued, and delivered by one
foreground queue run (C{exim4 -qf}).  Exim runs as root with C{exim_user
root} (no Debian-exim user needed); its smtp transport runs as C{nobody}.
Its spool and logs live in the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

__all__ = ["EXIM", "findExim", "EximRelay"]

#: Where C{tests/exim/provide.sh} puts the binary by default.
EXIM = "/opt/gopherpost-exim/usr/sbin/exim4"

_CONFIGURATION = """\
primary_hostname = exim.test
spool_directory = {directory}/spool
log_file_path = {directory}/log/%slog
exim_user = root
exim_group = root
never_users =
trusted_users = root
keep_environment =
host_lookup = :
rfc1413_hosts = :
dsn_advertise_hosts = *
smtputf8_advertise_hosts = *
chunking_advertise_hosts = *
acl_smtp_rcpt = accept
acl_smtp_data = accept

begin routers
to_gopherpost:
  driver = manualroute
  route_list = * 127.0.0.1
  transport = gopherpost_smtp
  self = send

begin transports
gopherpost_smtp:
  driver = smtp
  port = {port}
  hosts_try_chunking = *
  hosts_avoid_tls = *
  allow_localhost
  user = nobody

begin retry
* * F,1h,1m
"""


def findExim() -> str | None:
    """
    The exim4 binary: C{GOPHERPOST_EXIM}, else L{EXIM}; L{None} when it is
    not there.
    """
    path = os.environ.get("GOPHERPOST_EXIM", EXIM)
    return path if os.access(path, os.X_OK) else None


class EximRelay:
    """
    One private Exim relaying to C{127.0.0.1:port}.

    @ivar directory: its configuration, spool and logs: a directory of its
        own under /tmp (its transport, as nobody, must be able to reach the
        spool, which a test's own temporary directory may not allow),
        removed at the test's cleanup.
    """

    def __init__(self, testCase: object, binary: str, port: int) -> None:
        self._binary = binary
        self.directory = tempfile.mkdtemp(prefix="gopherpost-exim.")
        os.chmod(self.directory, 0o755)
        testCase.addCleanup(shutil.rmtree, self.directory, True)  # type: ignore[attr-defined]
        os.makedirs(os.path.join(self.directory, "spool"))
        os.makedirs(os.path.join(self.directory, "log"))
        # Its hints databases, written by the transport too (as nobody).
        os.makedirs(os.path.join(self.directory, "spool", "db"))
        os.chmod(os.path.join(self.directory, "spool", "db"), 0o777)
        self._configuration = os.path.join(self.directory, "exim.conf")
        with open(self._configuration, "w") as f:
            f.write(_CONFIGURATION.format(directory=self.directory, port=port))

    def _run(self, arguments: list[str], stdin: bytes = b"") -> tuple[int, str]:
        process = subprocess.run(
            [self._binary, "-C", self._configuration, *arguments],
            input=stdin,
            capture_output=True,
            timeout=60,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        output = (process.stdout + process.stderr).decode("utf-8", "replace")
        return process.returncode, output

    def submit(self, dialogue: bytes) -> Deferred[tuple[int, str]]:
        """
        Hand Exim an SMTP session (client side, CRLF lines) as from
        127.0.0.1; fires with C{(exit status, Exim's replies)}.  The
        message is queued, not yet delivered.
        """
        return deferToThread(self._run, ["-bs", "-oMa", "127.0.0.1", "-odq"], dialogue)

    def runQueue(self) -> Deferred[tuple[int, str]]:
        """
        One foreground queue run: every queued message is tried now.
        """
        return deferToThread(self._run, ["-qf"])

    def mainlog(self) -> str:
        """
        Exim's main log so far.
        """
        path = os.path.join(self.directory, "log", "mainlog")
        if not os.path.exists(path):
            return ""
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def panics(self) -> str:
        """
        Exim's panic log (empty when all is well).
        """
        path = os.path.join(self.directory, "log", "paniclog")
        if not os.path.exists(path):
            return ""
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def __repr__(self) -> str:
        return f"<EximRelay {self.directory}>"
