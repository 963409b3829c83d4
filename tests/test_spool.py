"""
Tests for L{gopherpost.spool}: layout, names, durability order and recovery.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gopherpost import spool as spoolModule
from gopherpost.spool import Envelope, Spool, SpoolError


def _synchronous(f, *args):
    return maybeDeferred(f, *args)


class SpoolTests(SynchronousTestCase):
    """
    Storing messages.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1795000000)  # 2026-11-18
        self.path = os.path.abspath(self.mktemp())
        self.spool = Spool(self.path, self.clock, runInThread=_synchronous)
        self.spool.open()

    def store(self, content: bytes = b"Subject: x\r\n\r\nbody\r\n", recipients=None) -> Envelope:
        writer = self.spool.newWriter()
        writer.write(content)
        d = self.spool.commit(
            writer,
            "alice@gopherpost.test",
            recipients or [("Bob@Example.test", False), ("carol@gopherpost.test", True)],
            "192.0.2.1",
            "client.test",
            True,
        )
        return self.successResultOf(d)

    def test_layout(self) -> None:
        """
        A message is stored as C{<date>/<queueid>_<token>.eml} per recipient,
        hard links to the same content, with an envelope beside them.
        """
        envelope = self.store()
        self.assertEqual(envelope.dateDirectory, "2026-11-18")
        directory = os.path.join(self.path, "2026-11-18")
        names = sorted(os.listdir(directory))
        tokens = sorted(r.token for r in envelope.recipients)
        self.assertEqual(
            names,
            sorted(
                [f"{envelope.queueId}_{t}.eml" for t in tokens] + [f"{envelope.queueId}.envelope"]
            ),
        )
        first, second = (os.path.join(directory, n) for n in names if n.endswith(".eml"))
        self.assertEqual(os.stat(first).st_ino, os.stat(second).st_ino)
        with open(first, "rb") as f:
            self.assertEqual(f.read(), b"Subject: x\r\n\r\nbody\r\n")
        self.assertEqual(os.listdir(os.path.join(self.path, "tmp")), [])
        loaded = self.spool.envelopeIn("2026-11-18", envelope.queueId)
        self.assertEqual(loaded, envelope)
        self.assertEqual([r.address for r in envelope.relayRecipients], ["Bob@Example.test"])

    def test_envelopeJSON(self) -> None:
        """
        The envelope file holds every field of the L{Envelope} (recipients
        as objects; an empty metadata is left out) and a version, and reads
        back equal.
        """
        import json
        from dataclasses import asdict

        envelope = self.store()
        expected = json.loads(json.dumps(asdict(envelope)))
        self.assertEqual(expected.pop("metadata"), {})
        expected["version"] = 1
        self.assertEqual(json.loads(envelope.toJSON()), expected)
        self.assertEqual(Envelope.fromJSON(envelope.toJSON()), envelope)

    def test_tokenIsKeyedHash(self) -> None:
        """
        The token is HMAC-SHA256 of the lowercased address with the
        installation's secret, not a plain hash.
        """
        with open(os.path.join(self.spool.stateDirectory, "secret")) as f:
            secret = bytes.fromhex(f.read().strip())
        expected = hmac.new(secret, b"bob@example.test", hashlib.sha256).hexdigest()[:16]
        self.assertEqual(self.spool.tokenFor("Bob@Example.TEST"), expected)
        self.assertNotEqual(expected, hashlib.sha256(b"bob@example.test").hexdigest()[:16])

    def test_secretKept(self) -> None:
        """
        The secret is created once, 0600, and reused by the next start.
        """
        secretPath = os.path.join(self.spool.stateDirectory, "secret")
        self.assertEqual(stat.S_IMODE(os.stat(secretPath).st_mode), 0o600)
        token = self.spool.tokenFor("bob@example.test")
        again = Spool(self.path, self.clock, runInThread=_synchronous)
        again.open()
        self.assertEqual(again.tokenFor("bob@example.test"), token)

    def test_duplicateRecipients(self) -> None:
        """
        The same address twice (any case) is stored once.
        """
        envelope = self.store(recipients=[("a@example.test", False), ("A@EXAMPLE.test", False)])
        self.assertEqual(len(envelope.recipients), 1)

    def test_spill(self) -> None:
        """
        A message larger than the spill threshold is written through a file
        and stored completely.
        """
        content = b"x" * 78 + b"\r\n"
        writer = self.spool.newWriter()
        total = b""
        while len(total) <= spoolModule.SPILL_THRESHOLD * 2:
            writer.write(content)
            total += content
        self.assertTrue(os.path.exists(writer.path))
        envelope = self.successResultOf(
            self.spool.commit(writer, "", [("b@example.test", False)], "192.0.2.1", "c", False)
        )
        with open(self.spool.messagePath(envelope), "rb") as f:
            self.assertEqual(f.read(), total)
        self.assertEqual(envelope.size, len(total))
        self.assertEqual(envelope.sender, "")

    def test_abortRemovesSpill(self) -> None:
        """
        An aborted large message leaves nothing behind.
        """
        writer = self.spool.newWriter()
        writer.write(b"x" * (spoolModule.SPILL_THRESHOLD + 1))
        writer.abort()
        self.assertEqual(os.listdir(os.path.join(self.path, "tmp")), [])

    def test_recovery(self) -> None:
        """
        At start-up, leftovers in C{tmp/} and messages without an envelope
        (never acknowledged) are removed; committed messages stay.
        """
        kept = self.store()
        directory = os.path.join(self.path, kept.dateDirectory)
        orphan = os.path.join(directory, "0000000000001ABCDEF_0123456789abcdef.eml")
        with open(orphan, "wb") as f:
            f.write(b"half")
        with open(os.path.join(self.path, "tmp", "leftover"), "wb") as f:
            f.write(b"x")
        with open(os.path.join(directory, "0000000000001ABCDEF.tmp"), "wb") as f:
            f.write(b"{")
        Spool(self.path, self.clock, runInThread=_synchronous).open()
        self.assertFalse(os.path.exists(orphan))
        self.assertEqual(os.listdir(os.path.join(self.path, "tmp")), [])
        self.assertEqual(
            sorted(os.listdir(directory)),
            sorted(
                [f"{kept.queueId}_{r.token}.eml" for r in kept.recipients]
                + [f"{kept.queueId}.envelope"]
            ),
        )
        self.assertEqual([e.queueId for e in self.spool.envelopes()], [kept.queueId])

    def test_failureIsSpoolError(self) -> None:
        """
        An I/O error while committing fails with L{SpoolError} and leaves no
        message visible.
        """
        tmp = os.path.join(self.path, "tmp")
        writer = self.spool.newWriter()
        writer.write(b"x")
        os.rmdir(tmp)
        with open(tmp, "w"):
            pass
        failure = self.failureResultOf(
            self.spool.commit(writer, "", [("b@example.test", False)], "192.0.2.1", "c", False),
            SpoolError,
        )
        self.assertTrue(str(failure.value))
        self.assertEqual(list(self.spool.envelopes()), [])
        self.flushLoggedErrors()

    def test_unusableDirectory(self) -> None:
        """
        A spool path that cannot be a directory fails L{Spool.open}.
        """
        path = self.mktemp()
        with open(path, "w"):
            pass
        self.assertRaises(SpoolError, Spool(path, self.clock).open)

    def test_withoutSyncfs(self) -> None:
        """
        Where syncfs is not available, every file and directory is fsynced
        and the result is the same.
        """
        self.spool.syncfs = None
        envelope = self.store()
        with open(self.spool.messagePath(envelope), "rb") as f:
            self.assertEqual(f.read(), b"Subject: x\r\n\r\nbody\r\n")
        self.assertEqual(self.spool.envelopeIn(envelope.dateDirectory, envelope.queueId), envelope)

    def _deferredSteps(self) -> list:
        """
        Make the spool's thread hops wait: the returned list receives
        C{(deferred, f, args)} for each, to be run with L{_runStep}.
        """
        work = []

        def deferred(f, *args):
            d = Deferred()
            work.append((d, f, args))
            return d

        self.spool._runInThread = deferred
        return work

    def _runStep(self, work: list) -> tuple:
        """
        Run the thread part of the one waiting commit step; return the
        step's (fresh, naming) lists.
        """
        self.assertEqual(len(work), 1)
        d, f, args = work.pop()
        [step] = args
        maybeDeferred(f, *args).chainDeferred(d)
        return step.fresh, step.naming

    def _commit(self, body: bytes) -> Deferred:
        """
        Commit one message of C{body} to one remote recipient.
        """
        writer = self.spool.newWriter()
        writer.write(body)
        return self.spool.commit(writer, "", [("b@example.test", False)], "192.0.2.1", "c", False)

    def _commitMessages(self, count: int) -> list:
        results = []
        for n in range(count):
            self._commit(b"message %d\r\n" % n).addCallback(results.append)
        return results

    def test_groupCommit(self) -> None:
        """
        Messages that become ready while a step runs are written together
        in the next step, and named together in the step after it, each
        with its own result; one step both names the previous batch and
        writes the next.
        """
        work = self._deferredSteps()
        results = self._commitMessages(4)
        fresh, naming = self._runStep(work)
        self.assertEqual((len(fresh), len(naming)), (1, 0))
        self.assertEqual(results, [])
        fresh, naming = self._runStep(work)
        self.assertEqual((len(fresh), len(naming)), (3, 1))
        self.assertEqual(len(results), 1)
        fresh, naming = self._runStep(work)
        self.assertEqual((len(fresh), len(naming)), (0, 3))
        self.assertEqual(work, [])
        self.assertEqual(len({e.queueId for e in results}), 4)
        for n, envelope in enumerate(results):
            with open(self.spool.messagePath(envelope), "rb") as f:
                self.assertEqual(f.read(), b"message %d\r\n" % n)
        self.assertEqual(os.listdir(os.path.join(self.path, "tmp")), [])

    def test_stepBytesBounded(self) -> None:
        """
        A step writes at most L{spoolModule.MAX_BATCH_BYTES} of in-memory
        content (but always at least one message); the rest waits for the
        next step.
        """
        self.patch(spoolModule, "MAX_BATCH_BYTES", 250)
        work = self._deferredSteps()
        results = []
        for size in (100, 100, 100, 100, 400):
            self._commit(b"x" * size).addCallback(results.append)
        steps = []
        while work:
            fresh, naming = self._runStep(work)
            steps.append((len(fresh), len(naming)))
        self.assertEqual(steps, [(1, 0), (2, 1), (1, 2), (1, 1), (0, 1)])
        self.assertEqual(len(results), 5)

    def test_contentDurableBeforeName(self) -> None:
        """
        With syncfs, a message's content is written and synced in one step
        and only linked under its name, with its envelope, in the next: at
        no sync is a name visible whose content was not synced before.
        """
        seen = []

        def syncfs(path):
            self.assertEqual(path, self.spool.path)
            seen.append(
                (
                    len(os.listdir(os.path.join(self.path, "tmp"))),
                    [e.queueId for e in self.spool.envelopes()],
                )
            )

        self.spool.syncfs = syncfs
        work = self._deferredSteps()
        results = self._commitMessages(1)
        self._runStep(work)
        self.assertEqual(seen, [(1, [])])
        self.assertEqual(results, [])
        self._runStep(work)
        self.assertEqual(seen, [(1, []), (1, [results[0].queueId])])
        self.assertEqual(work, [])
        self.assertEqual(os.listdir(os.path.join(self.path, "tmp")), [])

    def test_onlyTheSyncInTheThread(self) -> None:
        """
        With syncfs, a step's writes, links and renames are made before its
        thread hop, which only syncs; a message named by a step is not
        acknowledged until that step's sync is done.
        """
        syncs = []
        self.spool.syncfs = syncs.append
        work = self._deferredSteps()
        results = self._commitMessages(1)
        [(_, f, _)] = work
        self.assertEqual(f, self.spool._syncInThread)
        self.assertEqual(len(os.listdir(os.path.join(self.path, "tmp"))), 1)
        self.assertEqual(syncs, [])
        self._runStep(work)
        self.assertEqual(syncs, [self.spool.path])
        # The second step named the message before its hop; not yet synced,
        # so not yet acknowledged.
        self.assertEqual(len(list(self.spool.envelopes())), 1)
        self.assertEqual(results, [])
        self._runStep(work)
        self.assertEqual(len(syncs), 2)
        self.assertEqual(len(results), 1)

    def test_unexpectedSyncErrorFailsStep(self) -> None:
        """
        A sync that fails with something other than an L{OSError} fails the
        step's messages too (and is logged), leaving nothing visible.
        """
        work = self._deferredSteps()
        failures = []
        self._commit(b"message\r\n").addErrback(failures.append)
        self._runStep(work)

        def syncfs(path):
            raise RuntimeError("broken")

        self.spool.syncfs = syncfs
        self._runStep(work)
        [failure] = failures
        failure.trap(RuntimeError)
        self.assertEqual(work, [])
        self.assertEqual(list(self.spool.envelopes()), [])
        self.assertEqual(os.listdir(os.path.join(self.path, "tmp")), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_withoutSyncfsOneStep(self) -> None:
        """
        Without syncfs each file is fsynced on its own, so a message is
        written and named in one step.
        """
        self.spool.syncfs = None
        work = self._deferredSteps()
        results = self._commitMessages(2)
        self._runStep(work)
        self.assertEqual(len(results), 1)
        self._runStep(work)
        self.assertEqual(len(results), 2)
        self.assertEqual(work, [])
        self.assertEqual(len(list(self.spool.envelopes())), 2)

    def test_syncFailureFailsStep(self) -> None:
        """
        When the sync fails, the messages being named fail and leave nothing
        visible, and so do those whose content was being written.
        """

        def syncfs(path):
            raise OSError(5, "Input/output error")

        work = self._deferredSteps()
        failures = []
        for n in range(2):
            self._commit(b"message %d\r\n" % n).addErrback(failures.append)
        self._runStep(work)
        self.spool.syncfs = syncfs
        self._runStep(work)
        self.assertEqual(len(failures), 2)
        for failure in failures:
            failure.trap(SpoolError)
        self.assertEqual(work, [])
        self.assertEqual(list(self.spool.envelopes()), [])
        self.assertEqual(os.listdir(os.path.join(self.path, "tmp")), [])
        self.flushLoggedErrors()

    def test_queueIdsOrdered(self) -> None:
        """
        Queue ids are unique and sort by time.
        """
        first = self.spool.newQueueId()
        self.clock.advance(0.001)
        second = self.spool.newQueueId()
        self.assertLess(first, second)
        self.assertEqual(len(first), 19)
        self.assertEqual(len({self.spool.newQueueId() for _ in range(100)}), 100)
