# -*- test-case-name: tests.test_spool -*-
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

A message is committed in this order: its content is written under
C{tmp/} and made durable; it is linked into its date directory once per
recipient, and its envelope is written and renamed into place; that is made
durable.  Only then are the spool's observers told (L{Spool.addObserver}:
the relay queue) and the commit's L{Deferred} fired (and the client told
250).  The envelope is the commit record: at start-up, C{.eml} files without
one were never acknowledged and are removed, as is everything left in
C{tmp/}.

Commits are grouped: messages that become ready while a batch is being
written go together in the next one, and each step is made durable for the
whole batch at once, with one C{syncfs(2)} on Linux 5.8+ (else an fsync of
every file and directory).  With syncfs the writes are made on the reactor
thread (small: content beyond L{SPILL_THRESHOLD} was written while it
arrived) and only the sync runs in the thread pool.  The spool knows nothing
of SMTP.
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

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from gopherpost.durable import fsyncDirectory, loadSyncfs, replaceFile, writeFile
from gopherpost.interfaces import ISpoolObserver

__all__ = ["Envelope", "Recipient", "Spool", "MessageWriter", "SpoolError"]

_log = Logger()

#: Bytes kept in memory per message before the writer spills to a file.
SPILL_THRESHOLD = 256 * 1024
#: Messages made durable together at most.
MAX_BATCH = 64
#: Bytes of in-memory content one commit step writes at most (at least one
#: message): the writes are made on the reactor thread.
MAX_BATCH_BYTES = 8 * 1024 * 1024

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

_syncfs = loadSyncfs()


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


@dataclass
class _CommitStep:
    """
    One step of the group commit (see L{Spool._startBatch}).

    @ivar fresh: messages whose content this step writes.
    @ivar naming: messages whose content is durable, named in this step.
    @ivar freshResults: per C{fresh} message, L{None} or the error that
        failed its write.
    @ivar sameStep: indexes of C{fresh} messages also named in this step
        (without syncfs).
    @ivar toName: the messages named in this step.
    @ivar namedResults: per C{toName} message, the date directory it was
        named in, or the error that failed it.
    """

    fresh: list[tuple[MessageWriter, Envelope]]
    naming: list[tuple[MessageWriter, Envelope]]
    freshResults: list[object] = field(default_factory=list)
    sameStep: list[int] = field(default_factory=list)
    toName: list[tuple[MessageWriter, Envelope]] = field(default_factory=list)
    namedResults: list[object] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.freshResults = [None] * len(self.fresh)


class Spool:
    """
    The on-disk store of accepted messages.

    @param path: the spool directory (C{SMTP_QUEUE_PATH}).
    @param reactor: provides time and the thread pool that does the fsyncs.
    @param runInThread: C{runInThread(f, *args) -> Deferred}; the default
        runs C{f} in the reactor's thread pool.
    """

    def __init__(
        self,
        path: str,
        reactor: IReactorTime,
        runInThread: Callable[..., Deferred] | None = None,
    ) -> None:
        self.path = os.path.abspath(path)
        self._reactor = reactor
        if runInThread is None:

            def runInThread(f: Callable[..., Any], *args: Any) -> Deferred:
                pool = reactor.getThreadPool()  # type: ignore[attr-defined]
                return deferToThreadPool(reactor, pool, f, *args)

        self._runInThread = runInThread
        self._tmp = os.path.join(self.path, "tmp")
        self._stateDirectory = os.path.join(self.path, ".gopherpost")
        self._secret = b""
        self._knownDateDirectories: set = set()
        self._pendingCommits: list[tuple[MessageWriter, Envelope, Deferred]] = []
        #: Messages whose content is durable, to be named in the next step.
        self._contentDurable: list[tuple[MessageWriter, Envelope, Deferred]] = []
        self._batchRunning = False
        #: Syncs a whole file system per batch (None: fsync file by file).
        self.syncfs = _syncfs
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
        Create the layout, load or create the secret, and recover from a
        crash.  Called once at start-up, before the reactor runs.

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
            if recover:
                self.recover()
            probe = os.path.join(self._tmp, f".probe{os.getpid()}")
            writeFile(probe, b"")
            os.unlink(probe)
        except OSError as e:
            raise SpoolError(f"{self.path}: {e.strerror or e}") from e

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
        The 16-hex-digit keyed hash of a recipient address.
        """
        digest = hmac.new(self._secret, address.lower().encode("utf-8"), hashlib.sha256)
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
            message and its envelope are on disk and fsynced, or fails with
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
        self._pendingCommits.append((writer, envelope, d))
        self._startBatch()

        def committed(stored: Envelope) -> Envelope:
            self.announce(stored)
            return stored

        def failed(failure):
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

        return d.addCallbacks(committed, failed)

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

    def _startBatch(self) -> None:
        """
        Group commit, pipelined: one step at a time takes every message that
        became ready meanwhile (at most L{MAX_BATCH}) and writes its content;
        the same step links the messages whose content the previous step
        made durable and writes their envelopes; then one file-system sync
        makes both durable.  A message is thus acknowledged after two syncs,
        its content's and its name's, as write-fsync-rename-fsync requires,
        while under load each sync serves two batches.

        With syncfs, the writes, links and renames of a step are made on the
        reactor thread (they are small: a message's content is in memory
        only up to L{SPILL_THRESHOLD}, beyond that it was written while it
        arrived) and only the sync goes to the thread pool: one thread hop
        per step instead of a few system calls each passing the GIL between
        the reactor and a pool thread.  Without syncfs, every file is
        fsynced, so the whole step runs in the thread pool.
        """
        if self._batchRunning or not (self._pendingCommits or self._contentDurable):
            return
        count, size = 0, 0
        for writer, _, _ in self._pendingCommits[:MAX_BATCH]:
            size += writer.unwritten
            if count and size > MAX_BATCH_BYTES:
                break
            count += 1
        fresh = self._pendingCommits[:count]
        del self._pendingCommits[:count]
        naming, self._contentDurable = self._contentDurable, []
        self._batchRunning = True
        step = _CommitStep([(w, e) for w, e, _ in fresh], [(w, e) for w, e, _ in naming])
        if self.syncfs is None:
            d = self._runInThread(self._commitStepInThread, step)
        else:
            try:
                self._writeStep(step, sync=False)
            except Exception:
                d = fail()
            else:
                d = self._runInThread(self._syncInThread, step)
            d.addBoth(self._settleAfterSync, step)
        d.addBoth(self._stepFinished, fresh, naming)

    def _stepFinished(
        self,
        results: object,
        fresh: list[tuple[MessageWriter, Envelope, Deferred]],
        naming: list[tuple[MessageWriter, Envelope, Deferred]],
    ) -> None:
        self._batchRunning = False
        if isinstance(results, tuple):
            freshResults, namingResults = results
        else:
            freshResults = [results] * len(fresh)
            namingResults = [results] * len(naming)
        finished = []
        for entry, result in zip(fresh, freshResults):
            if result is None:
                self._contentDurable.append(entry)
            else:
                finished.append((entry[2], result))
        finished.extend((entry[2], result) for entry, result in zip(naming, namingResults))
        self._startBatch()
        for d, result in finished:
            if isinstance(result, Envelope):
                d.callback(result)
            else:
                d.errback(result if isinstance(result, Failure) else Failure(result))

    def _writeStep(self, step: _CommitStep, sync: bool) -> None:
        """
        The writing part of a step (see L{_startBatch}): write the content of
        C{step.fresh}; link C{step.naming} (whose content is already durable)
        and write their envelopes.  With C{sync} (no syncfs) every file is
        fsynced on its own, so C{fresh} messages are named in the same step,
        right after their content.
        """
        for i, (writer, _) in enumerate(step.fresh):
            try:
                writer._finish(sync=sync)
            except OSError as e:
                step.freshResults[i] = e
                _unlinkQuietly(writer.path)
        if sync:
            step.sameStep = [i for i, r in enumerate(step.freshResults) if r is None]
        step.toName = step.naming + [step.fresh[i] for i in step.sameStep]
        for writer, envelope in step.toName:
            try:
                step.namedResults.append(self._name(writer, envelope, sync=sync))
            except OSError as e:
                self._unname(envelope)
                step.namedResults.append(e)

    def _syncInThread(self, step: _CommitStep) -> None:
        """
        Make a step's writes durable with one C{syncfs}.  Runs in a thread.
        """
        self.syncfs(self.path)

    def _settleAfterSync(
        self, result: object, step: _CommitStep
    ) -> tuple[list[object], list[object]]:
        """
        After the sync (or its failure, which fails the whole step): remove
        the temporary names and give each message its outcome.
        """
        error = None
        if isinstance(result, Failure):
            error = result.value
            if not isinstance(error, OSError):
                _log.failure("Spool commit step failed", result)
        return self._settle(step, error)

    def _commitStepInThread(self, step: _CommitStep) -> tuple[list[object], list[object]]:
        """
        A whole step without syncfs: write, fsync every file and directory,
        settle.  Runs in a thread.
        """
        self._writeStep(step, sync=True)
        try:
            for directory in {r for r in step.namedResults if isinstance(r, str)}:
                fsyncDirectory(directory)
        except OSError as e:
            return self._settle(step, e)
        return self._settle(step, None)

    def _settle(
        self, step: _CommitStep, error: BaseException | None
    ) -> tuple[list[object], list[object]]:
        """
        Finish a step once its sync is done (C{error}: it failed, and with it
        every message of the step).

        @return: per C{fresh} message, L{None} (content durable, to be named
            in the next step), its L{Envelope} (named in this step) or the
            exception that failed it; per C{naming} message, its L{Envelope}
            or the exception.
        """
        if error is not None:
            for (_, envelope), result in zip(step.toName, step.namedResults):
                if isinstance(result, str):
                    self._unname(envelope)
            for writer, _ in step.fresh + step.naming:
                _unlinkQuietly(writer.path)
            own = step.namedResults[: len(step.naming)]
            own += [None] * (len(step.naming) - len(own))
            return (
                [r if isinstance(r, BaseException) else error for r in step.freshResults],
                [r if isinstance(r, BaseException) else error for r in own],
            )
        for writer, _ in step.toName:
            _unlinkQuietly(writer.path)
        outcomes = [
            envelope if isinstance(result, str) else result
            for (_, envelope), result in zip(step.toName, step.namedResults)
        ]
        freshResults = list(step.freshResults)
        for i, outcome in zip(step.sameStep, outcomes[len(step.naming) :]):
            freshResults[i] = outcome
        return freshResults, outcomes[: len(step.naming)]

    def _name(self, writer: MessageWriter, envelope: Envelope, sync: bool) -> str:
        """
        Link the content under each recipient's name and write the envelope
        (the commit record) beside it.  With C{sync}, fsync as it goes;
        without, the step's syncfs covers everything, the new date directory
        included.

        @return: the date directory touched.
        """
        directory = os.path.join(self.path, envelope.dateDirectory)
        if envelope.dateDirectory not in self._knownDateDirectories:
            try:
                os.mkdir(directory, 0o750)
                if sync:
                    fsyncDirectory(self.path)
            except FileExistsError:
                pass
            self._knownDateDirectories.add(envelope.dateDirectory)
        for recipient in envelope.recipients:
            os.link(writer.path, self._messagePath(envelope, recipient.token))
        if sync:
            # Without syncfs: the links must be durable before the envelope
            # that makes them count.
            fsyncDirectory(directory)
        base = os.path.join(directory, envelope.queueId)
        writeFile(base + ".tmp", envelope.toJSON(), sync=sync)
        os.rename(base + ".tmp", base + _ENVELOPE_SUFFIX)
        return directory

    def _unname(self, envelope: Envelope) -> None:
        """
        Remove whatever L{_name} made of a failed message.
        """
        paths = [self._messagePath(envelope, r.token) for r in envelope.recipients]
        base = os.path.join(self.path, envelope.dateDirectory, envelope.queueId)
        for path in [base + _ENVELOPE_SUFFIX, base + ".tmp"] + paths:
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
        Read a file of the spool in a thread.
        """

        def read() -> bytes:
            with open(path, "rb") as f:
                return f.read()

        return self._runInThread(read)

    def envelopeIn(self, dateDirectory: str, queueId: str) -> Envelope:
        """
        Load one committed envelope (blocking; small file).
        """
        path = os.path.join(self.path, dateDirectory, queueId + _ENVELOPE_SUFFIX)
        with open(path, "rb") as f:
            return Envelope.fromJSON(f.read())

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

    def isWritable(self) -> tuple[bool, str]:
        """
        Whether new messages can be stored now (for health checks).
        """
        if not os.access(self._tmp, os.W_OK | os.X_OK):
            return (False, f"spool {self._tmp} is not writable")
        return (True, "")
