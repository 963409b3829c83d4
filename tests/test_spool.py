"""
Tests for L{gopherpost.spool}: layout, names and recovery (the group
commit is tested in L{tests.test_commit}).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

from twisted.internet.defer import maybeDeferred
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
