# -*- test-case-name: tests.test_milter_codec -*-
"""
The Sendmail milter protocol (version 6), MTA side: packets as bytes, no
I/O.

Every packet is a 32-bit length in network byte order (counting the
command octet and the data), one command octet, and the data.  Strings are
NUL-terminated; numbers are 32-bit (the connect port 16-bit), network byte
order.  The MTA sends commands (C{SMFIC_*}: L{Command}); the milter
answers each with one reply (C{SMFIR_*}: L{ReplyKind}), except where the
negotiated protocol flags say "no reply", and at the end of the message
may send modifications first.

The constants are those of Sendmail's C{libmilter/mfdef.h}.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from gopherpost.filters.failure import FilterProtocolError
from gopherpost.filters.verdict import (
    AddHeader,
    AddRecipient,
    ChangeHeader,
    ChangeSender,
    DeleteHeader,
    DeleteRecipient,
    InsertHeader,
    Modification,
)

__all__ = [
    "MILTER_VERSION",
    "MAX_PACKET",
    "BODY_CHUNK",
    "Command",
    "ReplyKind",
    "Action",
    "Step",
    "Stage",
    "OFFERED_ACTIONS",
    "OFFERED_STEPS",
    "Negotiation",
    "Reply",
    "ReplyCode",
    "BodyChunk",
    "Quarantine",
    "PacketReader",
    "packet",
    "optneg",
    "macros",
    "connect",
    "helo",
    "envelope",
    "header",
    "body",
    "simple",
    "parseReply",
]

#: The protocol version we speak.
MILTER_VERSION = 6

#: The longest packet we accept from a milter (a body chunk is at most
#: 64 KiB, or 1 MiB with SMFIP_MDS_1M, which we do not offer).
MAX_PACKET = 1024 * 1024 + 16

#: The largest body chunk we send (MILTER_CHUNK_SIZE).
BODY_CHUNK = 65535


class Command(bytes, enum.Enum):
    """
    MTA to milter (C{SMFIC_*}).
    """

    ABORT = b"A"
    BODY = b"B"
    CONNECT = b"C"
    MACRO = b"D"
    BODYEOB = b"E"
    HELO = b"H"
    QUIT_NC = b"K"
    HEADER = b"L"
    MAIL = b"M"
    EOH = b"N"
    OPTNEG = b"O"
    QUIT = b"Q"
    RCPT = b"R"
    DATA = b"T"
    UNKNOWN = b"U"


class ReplyKind(bytes, enum.Enum):
    """
    Milter to MTA (C{SMFIR_*}).
    """

    ADDRCPT = b"+"
    DELRCPT = b"-"
    ADDRCPT_PAR = b"2"
    SHUTDOWN = b"4"
    ACCEPT = b"a"
    REPLBODY = b"b"
    CONTINUE = b"c"
    DISCARD = b"d"
    CHGFROM = b"e"
    CONN_FAIL = b"f"
    ADDHEADER = b"h"
    INSHEADER = b"i"
    SETSYMLIST = b"l"
    CHGHEADER = b"m"
    PROGRESS = b"p"
    QUARANTINE = b"q"
    REJECT = b"r"
    SKIP = b"s"
    TEMPFAIL = b"t"
    REPLYCODE = b"y"
    OPTNEG = b"O"


class Action(enum.IntFlag):
    """
    What a milter may do at the end of a message (C{SMFIF_*}).
    """

    ADDHDRS = 0x01
    CHGBODY = 0x02
    ADDRCPT = 0x04
    DELRCPT = 0x08
    CHGHDRS = 0x10
    QUARANTINE = 0x20
    CHGFROM = 0x40
    ADDRCPT_PAR = 0x80
    SETSYMLIST = 0x100


class Step(enum.IntFlag):
    """
    Protocol flags (C{SMFIP_*}): stages a milter does not want (C{NO*}),
    stages it will not answer (C{NR_*}), and options.
    """

    NOCONNECT = 0x1
    NOHELO = 0x2
    NOMAIL = 0x4
    NORCPT = 0x8
    NOBODY = 0x10
    NOHDRS = 0x20
    NOEOH = 0x40
    NR_HDR = 0x80
    NOUNKNOWN = 0x100
    NODATA = 0x200
    SKIP = 0x400
    RCPT_REJ = 0x800
    NR_CONN = 0x1000
    NR_HELO = 0x2000
    NR_MAIL = 0x4000
    NR_RCPT = 0x8000
    NR_DATA = 0x10000
    NR_UNKN = 0x20000
    NR_EOH = 0x40000
    NR_BODY = 0x80000
    HDR_LEADSPC = 0x100000
    MDS_256K = 0x10000000
    MDS_1M = 0x20000000


class Stage(enum.IntEnum):
    """
    The stages a milter may ask macros for (C{SMFIM_*}).
    """

    CONNECT = 0
    HELO = 1
    ENVFROM = 2
    ENVRCPT = 3
    DATA = 4
    EOM = 5
    EOH = 6


#: Every end-of-message action: we can make them all.
OFFERED_ACTIONS = Action(0x1FF)

#: The protocol flags we offer: every C{NO*} and C{NR_*} step, SKIP and
#: leading spaces in header values.  Not RCPT_REJ (we do not tell
#: milters of recipients refused before them) nor the larger body chunks.
OFFERED_STEPS = Step(0x1FF7FF)


def packet(command: bytes, data: bytes = b"") -> bytes:
    """
    One packet.
    """
    return struct.pack("!I", len(data) + 1) + command + data


def _cstring(value: bytes) -> bytes:
    return value.replace(b"\x00", b"") + b"\x00"


def optneg(version: int, actions: int, steps: int) -> bytes:
    """
    C{SMFIC_OPTNEG}: what we speak and offer.
    """
    return packet(Command.OPTNEG.value, struct.pack("!III", version, actions, steps))


def macros(stage: Command, values: Sequence[tuple[bytes, bytes]]) -> bytes:
    """
    C{SMFIC_MACRO}: the macros for the command C{stage} that follows.
    """
    data = stage.value + b"".join(_cstring(n) + _cstring(v) for n, v in values)
    return packet(Command.MACRO.value, data)


def connect(hostname: bytes, family: bytes, port: int, address: bytes) -> bytes:
    """
    C{SMFIC_CONNECT}: family C{4}, C{6}, C{L} (a unix socket: port 0) or
    C{U} (unknown: no port and no address).
    """
    data = _cstring(hostname) + family
    if family != b"U":
        data += struct.pack("!H", port) + _cstring(address)
    return packet(Command.CONNECT.value, data)


def helo(name: bytes) -> bytes:
    """
    C{SMFIC_HELO}.
    """
    return packet(Command.HELO.value, _cstring(name))


def envelope(command: Command, address: bytes, arguments: Sequence[bytes] = ()) -> bytes:
    """
    C{SMFIC_MAIL} or C{SMFIC_RCPT}: the address in angle brackets, then
    each ESMTP argument.
    """
    data = _cstring(b"<" + address + b">") + b"".join(_cstring(a) for a in arguments)
    return packet(command.value, data)


def header(name: bytes, value: bytes) -> bytes:
    """
    C{SMFIC_HEADER}.
    """
    return packet(Command.HEADER.value, _cstring(name) + _cstring(value))


def body(chunk: bytes) -> bytes:
    """
    C{SMFIC_BODY}: at most L{BODY_CHUNK} octets.
    """
    return packet(Command.BODY.value, chunk)


def simple(command: Command) -> bytes:
    """
    A command without data: C{SMFIC_DATA}, C{SMFIC_EOH}, C{SMFIC_BODYEOB},
    C{SMFIC_ABORT}, C{SMFIC_QUIT}, C{SMFIC_QUIT_NC}.
    """
    return packet(command.value)


@dataclass(frozen=True)
class Negotiation:
    """
    A milter's C{SMFIC_OPTNEG} answer.

    @ivar symlists: the macros it wants at each stage (C{SMFIF_SETSYMLIST}).
    """

    version: int
    actions: Action
    steps: Step
    symlists: dict[Stage, tuple[bytes, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """
    A reply without data (accept, continue, reject, tempfail, discard,
    progress, skip, shutdown, conn_fail).
    """

    kind: ReplyKind


@dataclass(frozen=True)
class ReplyCode:
    """
    C{SMFIR_REPLYCODE}: a custom SMTP reply.

    @ivar text: the text, without the code; lines separated by C{\\n}.
    """

    code: int
    text: str


@dataclass(frozen=True)
class BodyChunk:
    """
    One piece of C{SMFIR_REPLBODY}.
    """

    data: bytes


@dataclass(frozen=True)
class Quarantine:
    """
    C{SMFIR_QUARANTINE}.
    """

    reason: str


class PacketReader:
    """
    Splits a byte stream into C{(command, data)} packets.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bytes]]:
        """
        Add bytes; yield every complete packet.

        @raise FilterProtocolError: for an empty or oversized packet.
        """
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = struct.unpack("!I", self._buffer[:4])
            if length == 0 or length > MAX_PACKET:
                raise FilterProtocolError(f"packet length {length}")
            if len(self._buffer) < 4 + length:
                return
            command = bytes(self._buffer[4:5])
            data = bytes(self._buffer[5 : 4 + length])
            del self._buffer[: 4 + length]
            yield command, data

    @property
    def pending(self) -> int:
        """
        Octets of an incomplete packet.
        """
        return len(self._buffer)


def _strings(data: bytes, count: int, what: str) -> list[bytes]:
    """
    Exactly C{count} NUL-terminated strings (more is a protocol error;
    fewer too).
    """
    if not data.endswith(b"\x00"):
        raise FilterProtocolError(f"{what}: not NUL-terminated")
    parts = data[:-1].split(b"\x00")
    if len(parts) != count:
        raise FilterProtocolError(f"{what}: {len(parts)} strings, expected {count}")
    return parts


def _index(data: bytes, what: str) -> tuple[int, bytes]:
    if len(data) < 4:
        raise FilterProtocolError(f"{what}: too short")
    (index,) = struct.unpack("!I", data[:4])
    return index, data[4:]


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _parseNegotiation(data: bytes) -> Negotiation:
    if len(data) < 12:
        raise FilterProtocolError("option negotiation: too short")
    version, actions, steps = struct.unpack("!III", data[:12])
    symlists: dict[Stage, tuple[bytes, ...]] = {}
    rest = data[12:]
    while rest:
        if len(rest) < 5:
            raise FilterProtocolError("option negotiation: truncated macro list")
        (stage,) = struct.unpack("!I", rest[:4])
        end = rest.find(b"\x00", 4)
        if end < 0:
            raise FilterProtocolError("option negotiation: macro list not NUL-terminated")
        names = tuple(rest[4:end].split())
        try:
            symlists[Stage(stage)] = names
        except ValueError:
            pass  # a stage we do not know: nothing to send there
        rest = rest[end + 1 :]
    return Negotiation(version, Action(actions & 0x1FF), Step(steps & 0x3FFFFFFF), symlists)


def _parseReplyCode(data: bytes) -> ReplyCode:
    if not data.endswith(b"\x00"):
        raise FilterProtocolError("reply code: not NUL-terminated")
    raw = data[:-1].decode("ascii", "replace")
    lines = raw.replace("\r\n", "\n").split("\n")
    code = lines[0][:3]
    if not code.isdigit() or code[0] not in "45" or lines[0][3:4] not in ("", " ", "-"):
        raise FilterProtocolError(f"reply code {raw[:40]!r}: not a 4xx or 5xx reply")
    texts = []
    for line in lines:
        if line[:3] != code:
            raise FilterProtocolError(f"reply code {raw[:40]!r}: lines with different codes")
        texts.append(line[4:])
    return ReplyCode(int(code), "\n".join(texts))


def parseReply(
    command: bytes, data: bytes
) -> Negotiation | Reply | ReplyCode | Modification | BodyChunk | Quarantine:
    """
    One packet from a milter as a value.

    C{SMFIR_CHGHEADER} with an empty value becomes a L{DeleteHeader};
    C{SMFIR_ADDRCPT_PAR} an L{AddRecipient} with parameters.

    @raise FilterProtocolError: for an unknown command or bad data.
    """
    try:
        kind = ReplyKind(command)
    except ValueError:
        raise FilterProtocolError(f"unknown reply {command!r}") from None
    if kind is ReplyKind.OPTNEG:
        return _parseNegotiation(data)
    if kind is ReplyKind.REPLYCODE:
        return _parseReplyCode(data)
    if kind is ReplyKind.ADDHEADER:
        name, value = _strings(data, 2, "add header")
        return AddHeader(name, value)
    if kind is ReplyKind.INSHEADER:
        index, rest = _index(data, "insert header")
        name, value = _strings(rest, 2, "insert header")
        return InsertHeader(index, name, value)
    if kind is ReplyKind.CHGHEADER:
        index, rest = _index(data, "change header")
        name, value = _strings(rest, 2, "change header")
        if not value:
            return DeleteHeader(name, max(index, 1))
        return ChangeHeader(name, index, value)
    if kind is ReplyKind.REPLBODY:
        return BodyChunk(data)
    if kind is ReplyKind.ADDRCPT:
        (address,) = _strings(data, 1, "add recipient")
        return AddRecipient(_text(address))
    if kind is ReplyKind.ADDRCPT_PAR:
        address, arguments = _strings(data, 2, "add recipient")
        return AddRecipient(_text(address), _text(arguments))
    if kind is ReplyKind.DELRCPT:
        (address,) = _strings(data, 1, "delete recipient")
        return DeleteRecipient(_text(address))
    if kind is ReplyKind.CHGFROM:
        parts = data[:-1].split(b"\x00") if data.endswith(b"\x00") else []
        if len(parts) not in (1, 2):
            raise FilterProtocolError("change sender: expected 1 or 2 strings")
        return ChangeSender(_text(parts[0]), _text(parts[1]) if len(parts) == 2 else "")
    if kind is ReplyKind.QUARANTINE:
        (reason,) = _strings(data, 1, "quarantine")
        return Quarantine(_text(reason))
    if kind is ReplyKind.SETSYMLIST:
        raise FilterProtocolError("macro list outside option negotiation")
    if data:
        raise FilterProtocolError(f"reply {command!r} with unexpected data")
    return Reply(kind)
