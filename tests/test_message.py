"""
Tests for L{gopherpost.inbound.message} and the spool's L{MessageWriter}:
the header section end-of-data policies read and edit, the head put in
front of a spilled body, write errors, and the envelope's metadata.
"""

from __future__ import annotations

import errno
import os

from twisted.internet.defer import maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost.inbound.interfaces import IIncomingMessage, IReceivedMessage
from gopherpost.inbound.message import (
    HEADER_SECTION_LIMIT,
    IncomingMessage,
    formatHeader,
    parseHeaderSection,
)
from gopherpost.spool import SPILL_THRESHOLD, Envelope, MessageWriter, Spool

TRACE = b"Received: from c.test\r\n\tby mx.test; now\r\n"


class Harness:
    """
    An L{IncomingMessage} on a real writer in a temporary directory; its
    commit finishes the writer and returns the stored bytes.
    """

    def __init__(self, case: SynchronousTestCase, headers: list | None = None) -> None:
        self.directory = case.mktemp()
        os.makedirs(self.directory)
        self.writer = MessageWriter(os.path.join(self.directory, "message"))

        def commit(message: IncomingMessage):
            self.writer._finish(sync=False)
            with open(self.writer.path, "rb") as f:
                return succeed(f.read())

        self.message = IncomingMessage(
            self.writer,
            "QID",
            TRACE,
            headers or [],
            commit,
            lambda f: maybeDeferred(f),
        )


class HeaderSectionTests(SynchronousTestCase):
    """
    Parsing and editing the header section.
    """

    def test_interfaces(self) -> None:
        """
        The message provides L{IIncomingMessage} (and so
        L{IReceivedMessage}).
        """
        message = Harness(self).message
        self.assertTrue(verifyObject(IIncomingMessage, message))
        self.assertTrue(verifyObject(IReceivedMessage, message))

    def test_parsedWhateverTheSplit(self) -> None:
        """
        The header section is found and parsed however the content comes.
        """
        content = (
            b"Subject: hello\r\nAuthentication-Results: spoofed;\r\n  dkim=pass\r\n"
            b"From: a@b.test\r\n\r\nbody line\r\n"
        )
        for size in (1, 2, 3, 7, len(content)):
            harness = Harness(self)
            for i in range(0, len(content), size):
                harness.message.write(content[i : i + size])
            self.assertEqual(
                harness.message.headers,
                [
                    ("Subject", "hello"),
                    ("Authentication-Results", "spoofed;  dkim=pass"),
                    ("From", "a@b.test"),
                ],
            )
            self.assertEqual(self.successResultOf(harness.message.readBody()), b"body line\r\n")
            stored = self.successResultOf(harness.message.commit())
            self.assertEqual(stored, TRACE + content)

    def test_removeMatching(self) -> None:
        """
        With a predicate, only the fields whose raw value (folding kept) it
        accepts are removed.
        """
        harness = Harness(self)
        harness.message.write(
            b"Authentication-Results: mx.test;\r\n\tdkim=pass\r\n"
            b"Authentication-Results: other.test; spf=pass\r\nSubject: s\r\n\r\nbody\r\n"
        )
        seen: list[str] = []

        def ours(value: str) -> bool:
            seen.append(value)
            return value.strip().startswith("mx.test;")

        self.assertEqual(harness.message.removeHeaders("authentication-results", ours), 1)
        self.assertEqual(seen, [" mx.test;\r\n\tdkim=pass", " other.test; spf=pass"])
        stored = self.successResultOf(harness.message.commit())
        self.assertEqual(
            stored,
            TRACE + b"Authentication-Results: other.test; spf=pass\r\nSubject: s\r\n\r\nbody\r\n",
        )

    def test_removeAbsent(self) -> None:
        """
        Removing a field the header section does not have removes nothing
        and leaves the message as it was; a name that only appears inside
        another field's value or name is no such field either.
        """
        harness = Harness(self)
        harness.message.write(
            b"Subject: about authentication-results\r\nX-Authentication-Results-Old: 1\r\n"
            b"\r\nAuthentication-Results: in the body\r\n"
        )
        self.assertEqual(harness.message.removeHeaders("Authentication-Results"), 0)
        self.assertEqual(harness.message.removeHeaders("X-GopherPost-Quarantine"), 0)
        stored = self.successResultOf(harness.message.commit())
        self.assertEqual(
            stored,
            TRACE
            + b"Subject: about authentication-results\r\nX-Authentication-Results-Old: 1\r\n"
            + b"\r\nAuthentication-Results: in the body\r\n",
        )

    def test_addAndRemove(self) -> None:
        """
        Added fields go below the trace header, in order; removed ones are
        gone from the stored message.
        """
        harness = Harness(self, headers=[("Received-SPF", "pass")])
        harness.message.write(
            b"Authentication-Results: evil; dkim=pass\r\nSubject: s\r\n"
            b"authentication-results: evil2\r\n\r\nbody\r\n"
        )
        self.assertEqual(harness.message.removeHeaders("Authentication-Results"), 2)
        harness.message.addHeader("Authentication-Results", "mx.test;\n spf=pass")
        stored = self.successResultOf(harness.message.commit())
        self.assertEqual(
            stored,
            TRACE
            + b"Received-SPF: pass\r\n"
            + b"Authentication-Results: mx.test;\r\n\tspf=pass\r\n"
            + b"Subject: s\r\n\r\nbody\r\n",
        )

    def test_noHeaders(self) -> None:
        """
        Content that starts with an empty line has no header section; one
        without an empty line is all header section.
        """
        harness = Harness(self)
        harness.message.write(b"\r\njust body\r\n")
        self.assertEqual(harness.message.headers, [])
        self.assertEqual(self.successResultOf(harness.message.readBody()), b"just body\r\n")
        harness = Harness(self)
        harness.message.write(b"Subject: only\r\n")
        self.assertEqual(harness.message.headers, [("Subject", "only")])
        self.assertEqual(
            self.successResultOf(harness.message.commit()), TRACE + b"Subject: only\r\n"
        )

    def test_hugeHeaderSection(self) -> None:
        """
        A header section over the limit is stored as it came, and policies
        see no fields (memory stays bounded).
        """
        harness = Harness(self)
        field = b"X-Long: " + b"v" * 900 + b"\r\n"
        count = HEADER_SECTION_LIMIT // len(field) + 2
        for _ in range(count):
            harness.message.write(field)
        harness.message.write(b"\r\nbody\r\n")
        self.assertEqual(harness.message.headers, [])
        stored = self.successResultOf(harness.message.commit())
        self.assertEqual(stored, TRACE + field * count + b"\r\nbody\r\n")

    def test_formatHeader(self) -> None:
        """
        Field values cannot break out of their field.
        """
        self.assertEqual(formatHeader("X-A", "a\nb"), b"X-A: a\r\n\tb\r\n")
        self.assertEqual(formatHeader("X-A", "a\r\nX-Evil: 1\x00"), b"X-A: a\r\n\tX-Evil: 1?\r\n")
        self.assertRaises(ValueError, formatHeader, "Bad Name", "x")
        self.assertRaises(ValueError, formatHeader, "Bad:Name", "x")
        self.assertEqual(parseHeaderSection(b"not a field\r\n"), [("not a field", "")])


class SpilledMessageTests(SynchronousTestCase):
    """
    Large messages go to a file as they arrive; the head still goes first.
    """

    def test_headChangedAfterSpill(self) -> None:
        """
        A header field added at the end of data is put in front of a body
        that was already written to the file.
        """
        harness = Harness(self)
        harness.message.write(b"Subject: big\r\n\r\n")
        line = b"b" * 78 + b"\r\n"
        for _ in range(SPILL_THRESHOLD // len(line) + 10):
            harness.message.write(line)
        self.assertTrue(harness.writer.spilled)
        body = self.successResultOf(harness.message.readBody())
        self.assertEqual(len(body), (SPILL_THRESHOLD // len(line) + 10) * len(line))
        harness.message.addHeader("Authentication-Results", "mx.test; none")
        stored = self.successResultOf(harness.message.commit())
        self.assertEqual(
            stored,
            TRACE + b"Authentication-Results: mx.test; none\r\nSubject: big\r\n\r\n" + body,
        )
        self.assertEqual(sorted(os.listdir(harness.directory)), ["message"])

    def test_headUnchangedAfterSpill(self) -> None:
        """
        Without edits nothing is copied: the file written while the message
        arrived is the message.
        """
        harness = Harness(self)
        harness.message.write(b"Subject: big\r\n\r\n")
        harness.message.write(b"c" * (SPILL_THRESHOLD + 1))
        inode = os.stat(harness.writer.path).st_ino
        self.successResultOf(harness.message.commit())
        self.assertEqual(os.stat(harness.writer.path).st_ino, inode)


class WriteErrorTests(SynchronousTestCase):
    """
    L{MessageWriter} write errors.
    """

    def test_noSpace(self) -> None:
        """
        A write that fails (no space: /dev/full) is remembered, not raised;
        the file is removed at once; later writes are dropped; finishing
        raises it.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "link")
        os.symlink("/dev/full", path)
        writer = MessageWriter(path)
        writer.write(b"x" * (SPILL_THRESHOLD + 1))
        self.assertIsNotNone(writer.error)
        assert writer.error is not None
        self.assertEqual(writer.error.errno, errno.ENOSPC)
        self.assertFalse(os.path.lexists(path))
        writer.write(b"more")
        error = self.assertRaises(OSError, writer._finish)
        self.assertEqual(error.errno, errno.ENOSPC)
        writer.abort()

    def test_openFails(self) -> None:
        """
        A file that cannot be created is an error too.
        """
        writer = MessageWriter(os.path.join(self.mktemp(), "missing", "file"))
        writer.write(b"x" * (SPILL_THRESHOLD + 1))
        assert writer.error is not None
        self.assertEqual(writer.error.errno, errno.ENOENT)


class MetadataTests(SynchronousTestCase):
    """
    The envelope's C{metadata}.
    """

    def test_roundTrip(self) -> None:
        """
        Metadata is stored with the envelope and read back; an envelope
        without it (as older ones are) reads as empty metadata.
        """
        import json

        path = self.mktemp()
        spool = Spool(path, Clock(), runInThread=lambda f, *a: maybeDeferred(f, *a))
        spool.open()
        writer = spool.newWriter()
        writer.write(b"Subject: x\r\n\r\nhi\r\n")
        metadata = {"spf": "pass", "body": "8BITMIME"}
        envelope = self.successResultOf(
            spool.commit(
                writer,
                "a@b.test",
                [("c@d.test", False)],
                "192.0.2.1",
                "h",
                False,
                metadata=metadata,
            )
        )
        [loaded] = spool.envelopes()
        self.assertEqual(loaded.metadata, metadata)
        self.assertEqual(loaded, envelope)
        old = json.loads(envelope.toJSON())
        del old["metadata"]
        self.assertEqual(Envelope.fromJSON(json.dumps(old).encode()).metadata, {})
