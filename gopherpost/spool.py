# -*- test-case-name: tests.test_spool,tests.test_commit -*-
"""
The durable message store.

Layout under the spool directory (C{SMTP_QUEUE_PATH})::

    .gopherpost/secret                 per-installation HMAC key (0600)
    tmp/                               writes in progress (emptied at start-up)
    YYYY-MM-DD/<queueid>_<token>.eml   the message, one hard link per recipient
    YYYY-MM-DD/<queueid>.envelope      JSON: sender, recipients, client, time

C{token} is 16 hex digits of HMAC-SHA256(secret, lowercased recipient), so
no address appears in any path and names cannot be reversed by hashing a
list of addresses without the secret.

A message is committed in this order: its content and its envelope are
written under C{tmp/}; their data is made safe to name (see
L{gopherpost.syncstrategy}); the content is linked into its date directory
once per recipient and the envelope renamed beside it; those names are made
durable.  Only then are the spool's observers told (L{Spool.addObserver}:
the relay queue) and the commit's L{Deferred} fired (and the client told
250).  No name exists before its data is safe, so whatever a crash or a
power failure leaves visible is whole.  The envelope is the commit record:
at start-up, C{.eml} files without one were never acknowledged and are
removed, as is everything left in C{tmp/}.

Commits are grouped and pipelined (L{Spool._startBatch}): one step writes
the data of the messages that became ready meanwhile and names those of the
step before, and one call of the sync strategy serves both.  On journaled
ext4 and on XFS that call costs one journal commit for the whole step
(C{sync_file_range} for the data, C{fsync} of the directories); elsewhere
one C{syncfs}, or without it an fsync of every file and directory.  A
client sending alone has its message named in the same step, right after
its data sync: one hop to the sync thread (L{gopherpost.syncthread}) per
message.  The spool knows nothing of SMTP.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import IO, Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from gopherpost.diskspace import StatVFSFunction, freeSpaceProblem
from gopherpost.durable import readFile, replaceFile, writeFile, writeOpen
from gopherpost.esmtp.smtputf8 import addressKey
from gopherpost.faults import CRASH_VARIABLE, SYNC_VARIABLE, CrashPoints
from gopherpost.interfaces import ISpoolObserver
from gopherpost.syncstrategy import ISyncStrategy, chooseSyncStrategy, strategyNamed
from gopherpost.syncthread import sharedSyncThread

__all__ = ["Envelope", "Recipient", "Spool", "MessageWriter", "SpoolError"]

_log = Logger()

#: Bytes kept in memory per message before the writer spills to a file.
SPILL_THRESHOLD = 256 * 1024
#: Messages made durable together at most.
MAX_BATCH = 64
#: Bytes of in-memory content one commit step writes at most (at least one
#: message): the writes are made on the reactor thread.
MAX_BATCH_BYTES = 8 * 1024 * 1024
#: Messages a step with nothing else to name names in the sync thread, right
#: after their data sync (one thread hop per message for a client alone).
SAME_STEP_LIMIT = 4

_ENVELOPE_SUFFIX = ".envelope"
_MESSAGE_SUFFIX = ".eml"


class SpoolError(Exception):
    """
    The spool could not be opened or a message could not be stored.

    @ivar errno: the error number of the file-system error behind it (e.g.
        C{errno.ENOSPC}), or L{None}.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass(frozen=True)
class Recipient:
    """
    One envelope recipient.

    @ivar address: the address as given in RCPT TO (without brackets).
    @ivar token: the keyed hash naming this recipient's C{.eml} file.
    @ivar local: whether the address is in one of our local domains.
    """

    address: str
    token: str
    local: bool


@dataclass(frozen=True)
class Envelope:
    """
    What we know about a stored message besides its content.

    @ivar sender: the reverse-path, C{""} for the null sender C{<>}.
    @ivar received: when the message was accepted (seconds since the epoch).
    @ivar metadata: what the inbound side learned about the message
        (JSON-able: policy tags, later the authenticated user,
        authentication results, DSN parameters); omitted from the JSON when
        empty, so envelopes without it read the same.
    """

    queueId: str
    dateDirectory: str
    received: float
    sender: str
    recipients: tuple[Recipient, ...]
    clientAddress: str
    helo: str
    size: int
    tls: bool
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)

    def toJSON(self) -> bytes:
        """
        Serialise as the C{.envelope} file's content.
        """
        # Built by hand: dataclasses.asdict deep-copies, and this runs for
        # every message.
        data = {name: getattr(self, name) for name in _ENVELOPE_FIELDS}
        data["recipients"] = [vars(r) for r in self.recipients]
        if not self.metadata:
            del data["metadata"]
        data["version"] = 1
        return json.dumps(data, sort_keys=True).encode("utf-8")

    @classmethod
    def fromJSON(cls, raw: bytes) -> Envelope:
        """
        Parse a C{.envelope} file's content.
        """
        data = json.loads(raw.decode("utf-8"))
        data.pop("version", None)
        data["recipients"] = tuple(Recipient(**r) for r in data["recipients"])
        return cls(**data)

    @property
    def relayRecipients(self) -> tuple[Recipient, ...]:
        """
        The recipients outside our local domains.
        """
        return tuple(r for r in self.recipients if not r.local)


_ENVELOPE_FIELDS = tuple(f.name for f in fields(Envelope))


class MessageWriter:
    """
    Collects the content of one incoming message: a head (header fields,
    settable until the message is committed) and a body, written as it
    arrives.

    Small messages stay in memory; past L{SPILL_THRESHOLD} bytes the content
    goes to a file under the spool's C{tmp/} through a buffered writer, so a
    large message costs neither unbounded memory nor long blocking writes.
    A head changed after the spill (a policy added a header field at the end
    of data) is put in front of the body when the message is finished.

    A write error (no space left, a read-only file system) does not raise:
    the file is removed at once, later writes are dropped, and L{error}
    tells the caller, which refuses the message.

    @ivar error: the L{OSError} that stopped the writes, or L{None}.
    """

    def __init__(self, tmpPath: str) -> None:
        self._tmpPath = tmpPath
        self._head = b""
        #: The head at the start of the spilled file (None: not spilled).
        self._headOnDisk: bytes | None = None
        self._buffer = bytearray()
        self._file: IO[bytes] | None = None
        self._bodySize = 0
        self.error: OSError | None = None
        self.closed = False

    @property
    def path(self) -> str:
        """
        Where the content is (or will be) written under C{tmp/}.
        """
        return self._tmpPath

    @property
    def size(self) -> int:
        """
        Bytes of the message: head and body.
        """
        return len(self._head) + self._bodySize

    @property
    def unwritten(self) -> int:
        """
        Bytes still only in memory.
        """
        if self._file is None:
            return len(self._head) + len(self._buffer)
        return len(self._buffer)

    @property
    def spilled(self) -> bool:
        """
        Whether the content went to a file.
        """
        return self._headOnDisk is not None

    def setHead(self, head: bytes) -> None:
        """
        Put C{head} before the body (replacing any head set before).
        """
        self._head = head

    def write(self, data: bytes) -> None:
        """
        Append C{data} to the body.
        """
        if self.error is not None or self.closed:
            return
        self._bodySize += len(data)
        if self._file is not None:
            try:
                self._file.write(data)
            except OSError as e:
                self._fail(e)
            return
        self._buffer += data
        if len(self._head) + len(self._buffer) > SPILL_THRESHOLD:
            self._spill()

    def replaceBody(self, body: bytes) -> None:
        """
        Make C{body} everything after the head (what was written is
        dropped): a content filter replaced the body.  Blocking when
        spilled: call it in a thread then.
        """
        if self.error is not None or self.closed:
            return
        if self._file is None:
            self._buffer = bytearray(body)
            self._bodySize = len(body)
            if len(self._head) + len(self._buffer) > SPILL_THRESHOLD:
                self._spill()
            return
        assert self._headOnDisk is not None
        try:
            self._file.flush()
            self._file.seek(len(self._headOnDisk))
            self._file.truncate()
            self._file.write(body)
        except OSError as e:
            self._fail(e)
            return
        self._bodySize = len(body)

    def _spill(self) -> None:
        try:
            self._file = open(self._tmpPath, "wb", buffering=64 * 1024)
            self._file.write(self._head)
            self._file.write(self._buffer)
        except OSError as e:
            self._fail(e)
            return
        self._headOnDisk = self._head
        self._buffer = bytearray()

    def _fail(self, error: OSError) -> None:
        """
        A write failed: remember why, remove the file now, drop the rest.
        """
        self.error = error
        self._buffer = bytearray()
        self._closeFile()
        _unlinkQuietly(self._tmpPath)

    def _closeFile(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.close()
            except OSError:
                pass

    def readBody(self) -> bytes:
        """
        The body written so far (blocking when spilled: call it in a thread
        then).
        """
        if self._file is None:
            return bytes(self._buffer)
        assert self._headOnDisk is not None
        self._file.flush()
        with open(self._tmpPath, "rb") as f:
            f.seek(len(self._headOnDisk))
            return f.read()

    def _finish(self, sync: bool = True) -> None:
        """
        Write what is left, fsync (unless the caller syncs the whole file
        system) and close.

        @raise OSError: if the content could not be written (also a write
            error met earlier).
        """
        if self.error is not None:
            raise self.error
        if self._file is None:
            writeFile(self._tmpPath, self._head + self._buffer, sync=sync)
        else:
            self._file.write(self._buffer)
            self._file.flush()
            if self._head != self._headOnDisk:
                self._rewriteHead(sync)
            elif sync:
                os.fsync(self._file.fileno())
            self._closeFile()
        self._buffer = bytearray()
        self.closed = True

    def _rewriteHead(self, sync: bool) -> None:
        """
        Make the spilled file start with the current head: a new file with
        the head, then the body copied in the kernel, renamed over the old.
        """
        assert self._headOnDisk is not None
        replacement = self._tmpPath + ".head"
        try:
            with open(self._tmpPath, "rb") as source, open(replacement, "wb") as out:
                out.write(self._head)
                out.flush()
                _copyRange(source.fileno(), out, len(self._headOnDisk), self._bodySize)
                if sync:
                    os.fsync(out.fileno())
            os.replace(replacement, self._tmpPath)
        except OSError:
            _unlinkQuietly(replacement)
            raise
        self._headOnDisk = self._head

    def abort(self) -> None:
        """
        Throw the message away.
        """
        self.closed = True
        self._buffer = bytearray()
        if self._file is not None:
            self._closeFile()
            _unlinkQuietly(self._tmpPath)


def _copyRange(source: int, out: IO[bytes], offset: int, count: int) -> None:
    """
    Append C{count} bytes of file descriptor C{source}, from C{offset}, to
    C{out}: in the kernel where the file system allows, else through a
    buffer.
    """
    try:
        while count > 0:
            copied = os.copy_file_range(source, out.fileno(), count, offset)
            if copied <= 0:
                raise OSError(errno.EIO, "short copy")
            offset += copied
            count -= copied
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    while count > 0:
        chunk = os.pread(source, min(count, 1024 * 1024), offset)
        if not chunk:
            raise OSError(errno.EIO, "short read")
        out.write(chunk)
        offset += len(chunk)
        count -= len(chunk)
    out.flush()


def _unlinkQuietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@dataclass(eq=False)
class _Commit:
    """
    One message on its way through the commit pipeline.

    @ivar files: open descriptors of its content and envelope under
        C{tmp/}, from its write until its step's sync is done.
    @ivar error: what failed it, if anything did.
    @ivar named: whether its names (links, envelope) were all made.
    """

    writer: MessageWriter
    envelope: Envelope
    deferred: Deferred
    files: list[int] = field(default_factory=list)
    error: Failure | None = None
    named: bool = False

    @property
    def envelopeTmp(self) -> str:
        """
        Where its envelope is written under C{tmp/} before its rename.
        """
        return self.writer.path + _ENVELOPE_SUFFIX


@dataclass(eq=False)
class _CommitStep:
    """
    One step of the group commit (see L{Spool._startBatch}).

    @ivar fresh: messages whose data (content, envelope) this step writes.
    @ivar naming: messages whose data an earlier step made safe to name,
        named in this step before its sync.
    @ivar sameStep: whether C{fresh} is also named in this step, in the
        sync thread right after its data sync, then synced again.
    @ivar directories: directories the reactor-side naming created entries
        in (the spool itself for a new date directory).
    """

    fresh: list[_Commit]
    naming: list[_Commit]
    sameStep: bool = False
    directories: set[str] = field(default_factory=set)

    @property
    def written(self) -> list[_Commit]:
        """
        The C{fresh} messages whose data was written.
        """
        return [c for c in self.fresh if c.error is None]


class Spool:
    """
    The on-disk store of accepted messages.

    @param path: the spool directory (C{SMTP_QUEUE_PATH}).
    @param reactor: provides time, C{callFromThread} and the thread pool
        that reads large files.
    @param runInThread: C{runInThread(f, *args) -> Deferred}; the default
        runs reads in the reactor's thread pool and commit syncs in the
        process's sync thread (L{gopherpost.syncthread}); tests give one
        function for both.
    @param syncStrategy: how commits are made durable (default: chosen by
        L{open} for the file system, see L{gopherpost.syncstrategy}).
    @param crashPoints: fault injection for tests (default: from
        C{GOPHERPOST_TEST_CRASH_AT}, read by L{open}; see
        L{gopherpost.faults}).
    """

    def __init__(
        self,
        path: str,
        reactor: IReactorTime,
        runInThread: Callable[..., Deferred] | None = None,
        syncStrategy: ISyncStrategy | None = None,
        crashPoints: CrashPoints | None = None,
    ) -> None:
        self.path = os.path.abspath(path)
        self._reactor = reactor
        if runInThread is None:
            # Also IReactorThreads and IReactorFromThreads, as the real one.
            threads: Any = reactor

            def runInThread(f: Callable[..., Any], *args: Any) -> Deferred:
                return deferToThreadPool(threads, threads.getThreadPool(), f, *args)

            def runSync(f: Callable[..., Any], *args: Any) -> Deferred:
                return sharedSyncThread().run(threads, f, *args)

            self._runSync = runSync
        else:
            self._runSync = runInThread
        self._runInThread = runInThread
        self._tmp = os.path.join(self.path, "tmp")
        self._stateDirectory = os.path.join(self.path, ".gopherpost")
        self._secret = b""
        #: The keyed hash of the tokens, keyed once: each token copies it.
        self._keyedHash = hmac.new(self._secret, digestmod=hashlib.sha256)
        self._knownDateDirectories: set = set()
        self._pendingCommits: list[_Commit] = []
        #: Messages whose data is safe to name, to be named in the next step.
        self._contentDurable: list[_Commit] = []
        self._batchRunning = False
        #: How commit steps are made durable (L{open} chooses one if unset).
        self.syncStrategy: ISyncStrategy | None = syncStrategy
        self._crashPoints = crashPoints
        self._observers: list[ISpoolObserver] = []

    def addObserver(self, observer: ISpoolObserver) -> None:
        """
        Tell C{observer} about every message committed from now on (see
        L{ISpoolObserver}).
        """
        self._observers.append(observer)

    def removeObserver(self, observer: ISpoolObserver) -> None:
        """
        Stop telling C{observer} (if it was told at all).
        """
        if observer in self._observers:
            self._observers.remove(observer)

    def announce(self, envelope: Envelope) -> None:
        """
        Tell every observer that C{envelope}'s message is durably committed.

        The spool calls this for its own commits; a process that learns of
        a commit made by another process on the same spool (an inbound
        worker's) calls it too.  An observer that raises is logged; the
        others are still told.
        """
        for observer in list(self._observers):
            try:
                observer.messageCommitted(envelope)
            except Exception:
                _log.failure(
                    "Spool observer {observer!r} failed on {queueId}",
                    observer=observer,
                    queueId=envelope.queueId,
                )

    def announceStored(self, dateDirectory: str, queueId: str) -> None:
        """
        L{announce} a message that another process (an inbound worker)
        committed to this spool, reading its envelope back (one small file).
        """
        try:
            envelope = self.envelopeIn(dateDirectory, queueId)
        except (OSError, ValueError, TypeError, KeyError) as e:
            _log.error(
                "Spooled message {queueId} has no readable envelope: {error}",
                queueId=queueId,
                error=e,
            )
            return
        self.announce(envelope)

    @property
    def stateDirectory(self) -> str:
        """
        A private directory beside the messages for the server's own state
        (the HMAC secret, a generated TLS certificate).
        """
        return self._stateDirectory

    def open(self, recover: bool = True) -> None:
        """
        Create the layout, load or create the secret, recover from a crash,
        and choose how commits are synced.  Called once at start-up, before
        the reactor runs.

        @param recover: clean up after a crash; an inbound worker process
            passes C{False}, since its siblings are writing already.
        @raise SpoolError: if the directory cannot be used.
        """
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise SpoolError(f"{self.path} is not a directory")
        try:
            for directory in (self.path, self._tmp):
                os.makedirs(directory, mode=0o750, exist_ok=True)
            os.makedirs(self._stateDirectory, mode=0o700, exist_ok=True)
            self._secret = self._loadSecret()
            self._keyedHash = hmac.new(self._secret, digestmod=hashlib.sha256)
            if recover:
                self.recover()
            probe = os.path.join(self._tmp, f".probe{os.getpid()}")
            writeFile(probe, b"")
            os.unlink(probe)
        except OSError as e:
            raise SpoolError(f"{self.path}: {e.strerror or e}") from e
        self._openTestHooks()
        if self.syncStrategy is None:
            self.syncStrategy = chooseSyncStrategy(self.path)
        if recover:
            _log.info(
                "Spool {path}: commits synced by {strategy}",
                path=self.path,
                strategy=self.syncStrategy.name,
            )

    def _openTestHooks(self) -> None:
        """
        Read the fault-injection variables (L{gopherpost.faults}), once.
        """
        if self._crashPoints is not None:
            return  # given by a test
        try:
            self._crashPoints = CrashPoints.fromEnvironment(os.environ)
        except ValueError as e:
            raise SpoolError(str(e)) from None
        forced = os.environ.get(SYNC_VARIABLE, "").strip()
        if forced and self.syncStrategy is None:
            try:
                self.syncStrategy = strategyNamed(forced, self.path)
            except ValueError as e:
                raise SpoolError(f"{SYNC_VARIABLE}: {e}") from None
        if self._crashPoints.enabled or forced:
            _log.warn(
                "Test hooks enabled ({crash}={crashAt!r}, {sync}={forced!r}): not for production",
                crash=CRASH_VARIABLE,
                crashAt=os.environ.get(CRASH_VARIABLE, ""),
                sync=SYNC_VARIABLE,
                forced=forced,
            )

    def _loadSecret(self) -> bytes:
        secretPath = os.path.join(self._stateDirectory, "secret")
        try:
            with open(secretPath, "rb") as f:
                secret = bytes.fromhex(f.read().decode("ascii").strip())
            if len(secret) >= 16:
                return secret
        except FileNotFoundError:
            pass
        except ValueError:
            raise SpoolError(f"{secretPath} is corrupt; restore it from backup") from None
        secret = secrets.token_bytes(32)
        replaceFile(secretPath, secret.hex().encode("ascii") + b"\n", 0o600)
        return secret

    def recover(self) -> None:
        """
        Remove what a crash left behind: unfinished writes under C{tmp/} and
        messages whose envelope was never committed (never acknowledged).
        """
        for name in os.listdir(self._tmp):
            os.unlink(os.path.join(self._tmp, name))
        for dateDirectory in self.dateDirectories():
            directory = os.path.join(self.path, dateDirectory)
            names = os.listdir(directory)
            committed = {n[: -len(_ENVELOPE_SUFFIX)] for n in names if n.endswith(_ENVELOPE_SUFFIX)}
            for name in names:
                if name.endswith(_MESSAGE_SUFFIX):
                    queueId = name.split("_", 1)[0]
                    if queueId not in committed:
                        _log.warn("Removing unacknowledged {name} left by a crash", name=name)
                        os.unlink(os.path.join(directory, name))
                elif name.endswith(".tmp"):
                    # Envelopes were written here before they moved to tmp/.
                    os.unlink(os.path.join(directory, name))

    def dateDirectories(self) -> list[str]:
        """
        The date directories, oldest first.
        """
        return sorted(
            n
            for n in os.listdir(self.path)
            if len(n) == 10 and n[4] == "-" and n[7] == "-" and n.replace("-", "").isdigit()
        )

    def tokenFor(self, address: str) -> str:
        """
        The 16-hex-digit keyed hash of a recipient address (of its
        L{addressKey}: any case, an internationalised domain in U-labels or
        A-labels).
        """
        digest = self._keyedHash.copy()
        digest.update(addressKey(address).encode("utf-8"))
        return digest.hexdigest()[:16]

    def newQueueId(self) -> str:
        """
        A new unique queue id: time-ordered, 19 upper-case hex digits.
        """
        micros = int(self._reactor.seconds() * 1_000_000)
        return f"{micros:013X}{secrets.token_hex(3).upper()}"

    def newWriter(self) -> MessageWriter:
        """
        Start collecting a new message.
        """
        return MessageWriter(os.path.join(self._tmp, secrets.token_hex(12)))

    def commit(
        self,
        writer: MessageWriter,
        sender: str,
        recipients: Sequence[tuple[str, bool]],
        clientAddress: str,
        helo: str,
        tls: bool,
        queueId: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Deferred[Envelope]:
        """
        Store a collected message durably.

        @param recipients: C{(address, isLocal)} pairs; repeated addresses
            (in any case) are stored once.
        @param queueId: the id to store under (default: a new one).
        @param metadata: the envelope's L{Envelope.metadata}.
        @return: a L{Deferred} that fires with the L{Envelope} once the
            message and its envelope are on disk and synced, or fails with
            L{SpoolError}.
        """
        now = self._reactor.seconds()
        seen = set()
        unique = []
        for address, local in recipients:
            token = self.tokenFor(address)
            if token not in seen:
                seen.add(token)
                unique.append(Recipient(address, token, local))
        envelope = Envelope(
            queueId=queueId or self.newQueueId(),
            dateDirectory=time.strftime("%Y-%m-%d", time.gmtime(now)),
            received=now,
            sender=sender,
            recipients=tuple(unique),
            clientAddress=clientAddress,
            helo=helo,
            size=writer.size,
            tls=tls,
            metadata=metadata or {},
        )
        d: Deferred = Deferred()
        self._pendingCommits.append(_Commit(writer, envelope, d))
        self._startBatch()

        def failed(failure):
            if failure.check(CancelledError):
                # The caller gave up waiting; the commit goes on (and, if it
                # succeeds, is announced all the same).
                return failure
            writer.abort()
            if failure.check(OSError):
                # A file-system error (no space, read-only): one line, no
                # traceback; the client is told 451 or 452.
                _log.error(
                    "Could not store message {queueId}: {error}",
                    queueId=envelope.queueId,
                    error=failure.value,
                )
                raise SpoolError(str(failure.value), failure.value.errno)
            return failure

        return d.addErrback(failed)

    def store(
        self,
        content: bytes,
        sender: str,
        recipients: Sequence[tuple[str, bool]],
        clientAddress: str = "127.0.0.1",
        helo: str = "localhost",
    ) -> Deferred[Envelope]:
        """
        Store a message generated by the server itself (e.g. a bounce).
        """
        writer = self.newWriter()
        writer.write(content)
        return self.commit(writer, sender, recipients, clientAddress, helo, False)

    def _crash(self, step: str) -> None:
        if self._crashPoints is not None:
            self._crashPoints.reached(step)

    # The group commit.

    def _startBatch(self) -> None:
        """
        Group commit, pipelined: one step at a time takes every message that
        became ready meanwhile (at most L{MAX_BATCH}, and L{MAX_BATCH_BYTES}
        of content still in memory) and writes its data, content and
        envelope, under C{tmp/}; the same step names the messages whose data
        the previous step made safe (links per recipient, the envelope
        renamed into the date directory); then one call of the sync strategy
        in the sync thread makes the new names durable and the new data safe
        to name.  No name is made before its data is safe, so a crash (or a
        power failure) at any moment leaves only whole messages visible, and
        under load each sync serves two batches.

        A step with nothing to name and at most L{SAME_STEP_LIMIT} messages
        (a client sending alone) names them in the sync thread right after
        their data sync and syncs again: one thread hop per message.

        The writes, links and renames of the pipelined steps are made on the
        reactor thread: they are small (content beyond L{SPILL_THRESHOLD}
        was written while it arrived), and a thread hop per file costs more
        than the system call, the GIL passing back and forth.
        """
        if self._batchRunning or not (self._pendingCommits or self._contentDurable):
            return
        count, size = 0, 0
        for pending in self._pendingCommits[:MAX_BATCH]:
            size += pending.writer.unwritten
            if count and size > MAX_BATCH_BYTES:
                break
            count += 1
        fresh = self._pendingCommits[:count]
        del self._pendingCommits[:count]
        naming, self._contentDurable = self._contentDurable, []
        self._batchRunning = True
        step = _CommitStep(fresh, naming)
        for pending in fresh:
            self._writeData(pending)
        for pending in naming:
            self._name(pending, step.directories)
        written = step.written
        step.sameStep = bool(written) and not naming and len(written) <= SAME_STEP_LIMIT
        try:
            d = self._runSync(self._syncStep, step)
        except Exception:
            d = fail()  # no thread to run it: the step fails, the spool goes on
        d.addBoth(self._settle, step)

    def _writeData(self, pending: _Commit) -> None:
        """
        Write a message's content and envelope under C{tmp/}, unsynced,
        keeping them open for the sync.
        """
        try:
            pending.writer._finish(sync=False)
            # Opened again, not kept from the writes: a write-back error met
            # before is still reported to a new descriptor.
            pending.files.append(os.open(pending.writer.path, os.O_RDONLY))
            self._crash("content-written")
            pending.files.append(writeOpen(pending.envelopeTmp, pending.envelope.toJSON()))
            self._crash("envelope-written")
        except Exception:
            pending.error = Failure()

    def _name(self, pending: _Commit, directories: set[str]) -> None:
        """
        Link a message's content under each recipient's name and rename its
        envelope (the commit record) beside them; add the directories whose
        entries changed to C{directories}.  On failure, remove what was
        made.
        """
        envelope = pending.envelope
        directory = os.path.join(self.path, envelope.dateDirectory)
        try:
            if envelope.dateDirectory not in self._knownDateDirectories:
                try:
                    os.mkdir(directory, 0o750)
                except FileExistsError:
                    pass
                # Made by us or by another process on this spool (a worker)
                # whose sync may not be done: sync its entry too.
                directories.add(self.path)
                self._knownDateDirectories.add(envelope.dateDirectory)
            directories.add(directory)
            for recipient in envelope.recipients:
                os.link(pending.writer.path, self._messagePath(envelope, recipient.token))
            self._crash("linked")
            os.rename(
                pending.envelopeTmp, os.path.join(directory, envelope.queueId + _ENVELOPE_SUFFIX)
            )
            self._crash("envelope-renamed")
        except Exception:
            pending.error = Failure()
            self._unname(envelope)
        else:
            pending.named = True

    def _syncStep(self, step: _CommitStep) -> None:
        """
        The sync of a step (see L{_startBatch}).  Runs in the sync thread.
        """
        strategy = self.syncStrategy
        assert strategy is not None, "Spool.open was not called"
        written = step.written
        strategy.sync([fd for pending in written for fd in pending.files], sorted(step.directories))
        for _ in written:
            self._crash("data-synced")
        for pending in step.naming:
            if pending.named:
                self._crash("names-synced")
        if not step.sameStep:
            return
        directories: set[str] = set()
        for pending in written:
            self._name(pending, directories)
        strategy.sync([], sorted(directories))
        for pending in written:
            if pending.named:
                self._crash("names-synced")

    def _settle(self, result: object, step: _CommitStep) -> None:
        """
        After a step's sync (or its failure, which fails every message of
        the step): queue for naming the messages whose data is now safe,
        start the next step, give each finished message its outcome, then
        tell the observers of the committed ones, and only then tidy up
        (close the step's files, remove the temporary names of the committed
        messages), so that the clients wait for none of it.
        """
        failure = result if isinstance(result, Failure) else None
        if failure is not None:
            if not failure.check(OSError):
                _log.failure("Spool commit step failed", failure)
            # A date directory this step made may not be durable: the next
            # step to use it syncs its entry again.
            self._knownDateDirectories.difference_update(
                pending.envelope.dateDirectory for pending in step.fresh + step.naming
            )
        everyone = step.fresh + step.naming
        fresh = {id(pending) for pending in step.fresh}
        finished = []
        for pending in everyone:
            if failure is not None and pending.error is None:
                pending.error = failure
            if pending.error is not None:
                self._closeFiles(pending)
                self._unname(pending.envelope)
                _unlinkQuietly(pending.envelopeTmp)
                _unlinkQuietly(pending.writer.path)
                finished.append(pending)
            elif id(pending) in fresh and not step.sameStep:
                self._contentDurable.append(pending)
            else:
                finished.append(pending)
        self._batchRunning = False
        self._startBatch()
        for pending in finished:
            if pending.error is None:
                pending.deferred.callback(pending.envelope)
                self._crash("acknowledged")
            else:
                pending.deferred.errback(pending.error)
        # The observers after every client's 250: what they do (queue for
        # the relay, the index, webhooks) is in memory only, and what it
        # concerns is durable already; a start-up finds it in the spool.
        for pending in finished:
            if pending.error is None:
                # Told even when the committer cancelled its Deferred: every
                # committed message is announced.
                self.announce(pending.envelope)
                self._crash("announced")
        for pending in everyone:
            self._closeFiles(pending)
        for pending in finished:
            if pending.error is None:
                # Its content's extra name under tmp/ (start-up clears tmp/
                # if a crash comes first).
                _unlinkQuietly(pending.writer.path)
                self._crash("tmp-removed")

    @staticmethod
    def _closeFiles(pending: _Commit) -> None:
        for fd in pending.files:
            try:
                os.close(fd)
            except OSError:
                pass
        pending.files = []

    def _unname(self, envelope: Envelope) -> None:
        """
        Remove whatever L{_name} made of a failed message.
        """
        paths = [self._messagePath(envelope, r.token) for r in envelope.recipients]
        base = os.path.join(self.path, envelope.dateDirectory, envelope.queueId)
        for path in [base + _ENVELOPE_SUFFIX] + paths:
            try:
                os.unlink(path)
            except OSError:
                pass

    def _messagePath(self, envelope: Envelope, token: str) -> str:
        return self.contentPath(envelope.dateDirectory, envelope.queueId, token)

    def messagePath(self, envelope: Envelope, recipient: Recipient | None = None) -> str:
        """
        The C{.eml} file of one recipient (default: the first); all of a
        message's files hold the same content.
        """
        token = (recipient or envelope.recipients[0]).token
        return self._messagePath(envelope, token)

    def contentPath(self, dateDirectory: str, queueId: str, token: str) -> str:
        """
        The C{.eml} file of the recipient with C{token}.
        """
        return os.path.join(self.path, dateDirectory, f"{queueId}_{token}{_MESSAGE_SUFFIX}")

    def readMessage(self, envelope: Envelope) -> Deferred[bytes]:
        """
        Read a stored message's content in a thread.
        """
        return self.readContent(self.messagePath(envelope))

    def readContent(self, path: str) -> Deferred[bytes]:
        """
        Read a file of the spool in a thread (its access time left alone,
        see L{readFile}).
        """
        return self._runInThread(readFile, path)

    def envelopeIn(self, dateDirectory: str, queueId: str) -> Envelope:
        """
        Load one committed envelope (blocking; small file; its access time
        is left alone, see L{readFile}).
        """
        return Envelope.fromJSON(
            readFile(os.path.join(self.path, dateDirectory, queueId + _ENVELOPE_SUFFIX))
        )

    def envelopes(self) -> Iterator[Envelope]:
        """
        Every committed envelope, oldest first (blocking; for start-up).
        """
        for dateDirectory in self.dateDirectories():
            directory = os.path.join(self.path, dateDirectory)
            for name in sorted(os.listdir(directory)):
                if name.endswith(_ENVELOPE_SUFFIX):
                    try:
                        yield self.envelopeIn(dateDirectory, name[: -len(_ENVELOPE_SUFFIX)])
                    except (OSError, ValueError, TypeError, KeyError) as e:
                        _log.error("Unreadable envelope {name}: {error}", name=name, error=e)

    def isWritable(self, statvfs: StatVFSFunction | None = None) -> tuple[bool, str]:
        """
        Whether new messages can be stored now (for the readiness probes):
        the spool's C{tmp/} directory is writable (a read-only file system
        is not) and its file system has space and inodes left above a small
        margin (see L{gopherpost.diskspace}).

        @param statvfs: C{os.statvfs} (the default), or a fake in tests.
        @return: C{(True, "")}, or C{(False, reason)} with one line naming
            the directory.
        """
        if not os.access(self._tmp, os.W_OK | os.X_OK):
            return (False, f"spool {self._tmp} is not writable")
        problem = freeSpaceProblem(self.path, statvfs=statvfs)
        if problem is not None:
            return (False, problem)
        return (True, "")
