"""
A bounded, seeded fuzzer for the inbound side: random and mutated SMTP
dialogues, fed in random splits to the real protocol (over a
StringTransport, with a real spool and a Clock), each one checked for:

  - a traceback (any logged failure or error) in the server's log;
  - a reply that is not a valid reply line (RFC 5321 4.2: three digits,
    space or hyphen, printable US-ASCII; one code per multi-line reply);
  - a session that is still open once the clock passes every timeout;
  - a stored message with a bare CR or LF or a line over 998 octets.

L{fuzz} is what C{tests.test_fuzz} runs for a few seconds and C{bench/fuzz.py}
for minutes (also against a real C{twistd} over sockets, with
L{dialogue} and L{checkReplies}).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import implementer

from gopherpost.config import Settings
from gopherpost.inbound.factory import makeSMTPFactory
from gopherpost.inbound.replies import Reply
from gopherpost.inbound.roles import SMTP, SUBMISSION, SUBMISSIONS
from gopherpost.interfaces import IAuditLog
from gopherpost.spool import Spool
from tests.support.auth import TEST_PASSWORD, TEST_USER, InstantVerifier, makeService

__all__ = ["FuzzReport", "fuzz", "dialogue", "mutate", "checkReplies", "checkStored"]

_REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][\x20-\x7e]*\Z")

_TOKENS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b".",
    b"..",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r\n.",
    b"<",
    b">",
    b'"',
    b"\\",
    b"@",
    b":",
    b" ",
    b"\t",
    b"\xff",
    b"\xc3\xa9",
    b"\x1b[2J",
    b"=",
    b",",
    b"x" * 600,
    b"y" * 998,
    b"z" * 999,
    b"w" * 17000,
    b"SIZE=99999999999",
    b"BODY=8BITMIME",
]
_COMMANDS = [
    b"HELO",
    b"EHLO",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"VRFY",
    b"HELP",
    b"STARTTLS",
    b"AUTH PLAIN",
    b"AUTH LOGIN",
    b"AUTH PLAIN AGFsaWNlQGdvcGhlcnBvc3QudGVzdAB4",
    b"AUTH CRAM-MD5",
    b"BDAT 10",
    b"EXPN x",
    b"mail from:",
]
_ADDRESSES = [
    b"<alice@gopherpost.test>",
    b"<bob@example.test>",
    b"<>",
    b"<postmaster>",
    b'<"quoted local"@gopherpost.test>',
    b"<@route.test:bob@gopherpost.test>",
    b"<a@[127.0.0.1]>",
    b"alice@gopherpost.test",
    b"<carol@gopherpost.test> SIZE=100",
    b'<"a\rX-Injected: yes"@gopherpost.test>',
    b"<\xff@x.test>",
    b"<" + b"l" * 70 + b"@x.test>",
]


@implementer(IAuditLog)
class _NullAudit:
    def emit(self, event: str, **fields: object) -> None:
        pass

    def subscribe(self, callback: object) -> Any:
        raise NotImplementedError()


@implementer(ITLSTransport)
class _TLSTransport(StringTransport):  # type: ignore[misc]
    """
    A StringTransport that can "start TLS" (the handshake is completed by
    the fuzzer, at once or never).
    """

    started = False

    def startTLS(self, contextFactory: Any) -> None:
        self.started = True


@dataclass
class FuzzReport:
    """
    What a fuzzing run did and found.
    """

    dialogues: int = 0
    replies: int = 0
    octets: int = 0
    messages: int = 0
    findings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _authExchange(rng: random.Random) -> bytes:
    """
    An AUTH exchange: right or wrong, well-formed or not.
    """
    user = rng.choice([TEST_USER.encode(), b"nobody", b"", b"a\x00b", b"\xff"])
    password = rng.choice([TEST_PASSWORD.encode(), b"wrong", b"", b"p" * 2000])
    authzid = rng.choice([b"", b"", user, b"root"])
    kind = rng.randrange(6)
    if kind == 0:
        return b"AUTH PLAIN " + _b64(authzid + b"\0" + user + b"\0" + password) + b"\r\n"
    if kind == 1:
        return b"AUTH PLAIN\r\n" + _b64(b"\0" + user + b"\0" + password) + b"\r\n"
    if kind == 2:
        return b"AUTH LOGIN\r\n" + _b64(user) + b"\r\n" + _b64(password) + b"\r\n"
    if kind == 3:
        return b"AUTH LOGIN " + _b64(user) + b"\r\n" + rng.choice([b"*", b"=", b"!!"]) + b"\r\n"
    if kind == 4:
        return b"AUTH PLAIN\r\n" + rng.choice([b"A" * 13000, b"=", b"", b"*", b"===="]) + b"\r\n"
    return b"AUTH PLAIN " + rng.choice([b"=", b"dXNlcg", b"*", b"AA==", b"A" * 600]) + b"\r\n"


def dialogue(rng: random.Random) -> bytes:
    """
    A plausible client side of a session (mostly valid, with edge cases).
    """
    out = [rng.choice([b"EHLO client.test\r\n", b"HELO client.test\r\n", b"EHLO [127.0.0.1]\r\n"])]
    if rng.random() < 0.3:
        out += [_authExchange(rng) for _ in range(rng.randrange(1, 4))]
    for _ in range(rng.randrange(1, 4)):
        out.append(
            b"MAIL FROM:"
            + rng.choice(_ADDRESSES[:4])
            + rng.choice([b"", b" BODY=8BITMIME", b" SIZE=1000"])
            + b"\r\n"
        )
        for _ in range(rng.randrange(1, 4)):
            out.append(b"RCPT TO:" + rng.choice(_ADDRESSES) + b"\r\n")
        out.append(b"DATA\r\n")
        body = b"".join(
            rng.choice(_TOKENS[:12] + [b"Subject: fuzz\r\n", b"text "])
            for _ in range(rng.randrange(40))
        )
        out.append(body + b"\r\n.\r\n")
        if rng.random() < 0.5:
            out.append(rng.choice([b"NOOP\r\n", b"RSET\r\n", b"STARTTLS\r\n", b"VRFY bob\r\n"]))
    out.append(b"QUIT\r\n")
    return b"".join(out)


def randomDialogue(rng: random.Random) -> bytes:
    """
    Commands and arguments thrown together.
    """
    out = []
    for _ in range(rng.randrange(1, 15)):
        command = rng.choice(_COMMANDS)
        argument = b"".join(rng.choice(_TOKENS + _ADDRESSES) for _ in range(rng.randrange(3)))
        out.append(
            command
            + (b" " if rng.random() < 0.5 else b"")
            + argument
            + rng.choice([b"\r\n", b"\n", b"\r\n", b""])
        )
    return b"".join(out)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """
    One to four random edits: flip, insert a token, delete, duplicate.
    """
    edited = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        if not edited:
            edited += rng.choice(_TOKENS)
            continue
        where = rng.randrange(len(edited))
        kind = rng.randrange(4)
        if kind == 0:
            edited[where] = rng.randrange(256)
        elif kind == 1:
            edited[where:where] = rng.choice(_TOKENS + _ADDRESSES)
        elif kind == 2:
            del edited[where : where + rng.randrange(1, 20)]
        else:
            end = min(len(edited), where + rng.randrange(1, 200))
            edited[where:where] = edited[where:end] * rng.randrange(1, 4)
    return bytes(edited)


def checkReplies(output: bytes) -> list[str]:
    """
    Problems with the server's output: lines that are not reply lines,
    multi-line replies that change code, output not ending in CRLF.
    """
    problems = []
    if output and not output.endswith(b"\r\n"):
        problems.append(f"output does not end with CRLF: {output[-40:]!r}")
    continuing = None
    for line in output.split(b"\r\n")[:-1]:
        if not _REPLY_LINE.match(line):
            problems.append(f"not a reply line: {line[:80]!r}")
            continue
        if continuing is not None and line[:3] != continuing:
            problems.append(f"multi-line reply changes code: {line[:80]!r}")
        continuing = line[:3] if line[3:4] == b"-" else None
    return problems


def checkStored(content: bytes) -> list[str]:
    """
    Problems with a stored message: bare CR or LF, long lines.
    """
    problems = []
    if content.count(b"\r\n") != content.count(b"\n") or content.count(b"\r\n") != content.count(
        b"\r"
    ):
        problems.append("stored message has a bare CR or LF")
    if any(len(line) > 998 for line in content.split(b"\r\n")):
        problems.append("stored message has a line over 998 octets")
    return problems


def _pieces(rng: random.Random, data: bytes) -> list[bytes]:
    mode = rng.randrange(4)
    if mode == 0 or len(data) < 2:
        return [data]
    if mode == 1 and len(data) < 4000:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(rng.randrange(len(data)) for _ in range(rng.randrange(1, 12)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)]) if data[a:b]]


def fuzz(
    seed: int,
    seconds: float | None = None,
    dialogues: int | None = None,
    directory: str | None = None,
    progress: Callable[[FuzzReport], None] | None = None,
) -> FuzzReport:
    """
    Run the fuzzer until C{seconds} have passed or C{dialogues} were run.

    @param seed: the seed: the same seed gives the same dialogues.
    @param directory: where the spool goes (default: a new temporary one,
        removed at the end).
    """
    rng = random.Random(seed)
    report = FuzzReport()
    logged: list[str] = []

    @implementer(ILogObserver)
    def observer(event: dict[str, Any]) -> None:
        failure = event.get("log_failure")
        level = event.get("log_level")
        if failure is not None:
            logged.append(failure.getTraceback())
        elif level is not None and level.name in ("error", "critical"):
            logged.append(f"logged error: {event.get('log_format')}")

    root = directory or tempfile.mkdtemp(prefix="gopherpost-fuzz-")
    clock = Clock()
    clock.advance(1_800_000_000)
    spool = Spool(root, clock, runInThread=lambda f, *a: maybeDeferred(f, *a))
    spool.open()
    base = replace(
        Settings(),
        hostname="mx.gopherpost.test",
        localDomains=("mx.gopherpost.test", "gopherpost.test"),
        allowNetworks=(ipaddress.ip_network("0.0.0.0/0"),),
        relayNetworks=(ipaddress.ip_network("127.0.0.1/32"),),
        queuePath=root,
        maxMessageSize=64 * 1024,
        maxRecipients=5,
        commandTimeout=30,
        tlsDisable=False,
        maxConnections=0,
        maxConnectionsPerIP=0,
    )
    auth = makeService(
        os.path.join(root, ".auth"),
        [(TEST_USER, TEST_PASSWORD)],
        clock,
        verifier=InstantVerifier(),
        hostname=base.hostname,
        replyType=Reply,
        onSMTP=True,
    )
    factories = {
        role.name: makeSMTPFactory(
            base, spool, _NullAudit(), None, clock, object(), role=role, auth=auth
        )
        for role in (SMTP, SUBMISSION, SUBMISSIONS)
    }
    globalLogPublisher.addObserver(observer)
    started = time.monotonic()
    try:
        while True:
            if dialogues is not None and report.dialogues >= dialogues:
                break
            if seconds is not None and time.monotonic() - started >= seconds:
                break
            kind = rng.random()
            if kind < 0.4:
                data = dialogue(rng)
            elif kind < 0.6:
                data = randomDialogue(rng)
            else:
                data = mutate(rng, dialogue(rng) if rng.random() < 0.7 else randomDialogue(rng))
            role = rng.choice([SMTP, SMTP, SUBMISSION, SUBMISSIONS])
            client = rng.choice(["127.0.0.1", "192.0.2.7"])
            findings = _session(rng, factories[role.name], clock, client, data, report)
            report.dialogues += 1
            report.octets += len(data)
            for problem in findings + logged:
                report.findings.append(
                    f"{problem} (seed {seed}, dialogue {report.dialogues}: {data[:200]!r})"
                )
            del logged[:]
            clock.advance(0.001)
            if progress is not None and report.dialogues % 500 == 0:
                progress(report)
            for name in spool.dateDirectories():
                folder = os.path.join(root, name)
                for entry in os.listdir(folder):
                    path = os.path.join(folder, entry)
                    if entry.endswith(".eml"):
                        with open(path, "rb") as f:
                            for problem in checkStored(f.read()):
                                report.findings.append(f"{problem}: {entry}")
                        report.messages += 1
                    os.unlink(path)
    finally:
        globalLogPublisher.removeObserver(observer)
        report.seconds = time.monotonic() - started
        if directory is None:
            shutil.rmtree(root, ignore_errors=True)
    return report


def _session(
    rng: random.Random, factory: Any, clock: Clock, client: str, data: bytes, report: FuzzReport
) -> list[str]:
    transport = _TLSTransport(peerAddress=IPv4Address("TCP", client, 40000 + rng.randrange(20000)))
    proto = factory.buildProtocol(transport.getPeer())
    proto.makeConnection(transport)
    if factory.role.implicitTLS:
        proto.handshakeCompleted()
    for piece in _pieces(rng, data):
        if transport.disconnecting:
            break
        proto.dataReceived(piece)
        if transport.started and rng.random() < 0.8:
            transport.started = False
            proto.handshakeCompleted()
        if rng.random() < 0.05:
            clock.advance(rng.choice([1, 10, 29]))
    # Every session ends: by itself, or by the timeouts.  (A second at a
    # time: each failed AUTH is answered a second later, and the next
    # command only then starts its own timeout.)
    for _ in range(62 + 2 * 3):
        clock.advance(1)
    problems = []
    if not transport.disconnecting:
        problems.append("session still open after every timeout")
    output = transport.value()
    report.replies += output.count(b"\r\n")
    problems.extend(checkReplies(output))
    proto.connectionLost(None)
    return problems
