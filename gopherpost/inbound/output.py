# -*- test-case-name: tests.test_protocol -*-
"""
The one writer of a session's replies.

Replies are written in the order they are given.  While the protocol works
through one read's worth of pipelined commands it holds them
(L{ReplyWriter.hold}/L{ReplyWriter.release}) and they leave in one write
(RFC 2920 lets a server answer a group together), sent at once when nothing
is queued (L{gopherpost.sendnow.writeNow}); past L{FLUSH_BYTES} of held
replies they are written early, so that the transport's flow control (which
pauses the protocol when the client does not read) sees them.  Before the
TLS handshake of an implicit-TLS connection the writer is closed
(L{ReplyWriter.gate}): the banner waits for the handshake.
"""

from __future__ import annotations

from typing import Any

from gopherpost.inbound.replies import Reply
from gopherpost.sendnow import writeNow

__all__ = ["ReplyWriter", "FLUSH_BYTES"]

#: Held reply octets written without waiting for the end of the read.
FLUSH_BYTES = 16 * 1024


class ReplyWriter:
    """
    Writes replies to a transport, in order.

    @param transport: the connection.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._held: list[bytes] = []
        self._heldBytes = 0
        self._holding = 0
        self._gated = False

    @property
    def held(self) -> int:
        """
        Reply octets not written to the transport yet.
        """
        return self._heldBytes

    def hold(self) -> None:
        """
        Hold replies until the matching L{release}.
        """
        self._holding += 1

    def release(self) -> None:
        """
        End a L{hold}; the outermost one writes what was held.
        """
        self._holding -= 1
        if self._holding == 0:
            self.flush()

    def gate(self) -> None:
        """
        Hold every reply until L{open} (the TLS handshake is not done).
        """
        self._gated = True

    def open(self) -> None:
        """
        End the L{gate} and write what waited.
        """
        self._gated = False
        if not self._holding:
            self.flush()

    def write(self, reply: Reply) -> None:
        """
        Write one reply (now, or with the others held).
        """
        data = reply.wire
        if self._holding or self._gated:
            self._held.append(data)
            self._heldBytes += len(data)
            if self._heldBytes >= FLUSH_BYTES:
                self.flush()
            return
        writeNow(self._transport, data)

    def flush(self) -> None:
        """
        Write the held replies now (before the transport changes: TLS, a
        close), unless the gate is closed.
        """
        if self._gated or not self._held:
            return
        data = b"".join(self._held)
        self._held = []
        self._heldBytes = 0
        writeNow(self._transport, data)

    def discard(self) -> None:
        """
        Forget the held replies (the connection is being aborted).
        """
        self._held = []
        self._heldBytes = 0
