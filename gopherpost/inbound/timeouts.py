# -*- test-case-name: tests.test_timeouts -*-
"""
How long a client may take (C{SMTP_COMMAND_TIMEOUT}, C{SMTP_MIN_DATA_RATE}).

  - A command: the whole command line must arrive within the command
    timeout, counted from the moment the server is ready for it (its
    previous reply, or the banner).  Bytes of a half-typed line do not
    restart the clock.  The time the server itself takes (a DNS lookup, an
    fsync) is not counted.  A TLS handshake counts as part of the next
    command (STARTTLS's, or the implicit-TLS banner's).
  - Message content (DATA): Postfix's deadline.  The client starts with the
    command timeout; each read uses up the time since the one before and
    earns C{octets / minimum rate} seconds, but never more than the command
    timeout in hand.  So a silent client is cut off after the command
    timeout, and one that trickles (one octet every few seconds) after a
    little longer, however long it keeps trickling.  A minimum rate of 0
    leaves only the idle bound.

L{DataDeadline} computes the time left; the protocol arms its timer with
it.  What is left at the final dot is the time the end-of-data policies
(the content filters) may take: their time counts against the client's
budget, so a client that trickled its message in leaves them less.
"""

from __future__ import annotations

__all__ = ["DataDeadline"]


class DataDeadline:
    """
    The time left to a client sending message content.

    @param timeout: the command timeout (seconds), also the most the
        client can have in hand.
    @param minRate: octets per second that earn their time back; 0: none
        (the deadline is then an idle timer).
    @param now: when the content started.
    """

    def __init__(self, timeout: float, minRate: int, now: float) -> None:
        self._timeout = timeout
        self._minRate = minRate
        self._left = timeout
        self._last = now

    @property
    def left(self) -> float:
        """
        Seconds left after the last read (at the time of that read).
        """
        return self._left

    def leftAt(self, now: float) -> float:
        """
        Seconds left at C{now} if nothing more arrives (0 or less when the
        time is up).
        """
        if self._minRate <= 0:
            return self._left
        return self._left - (now - self._last)

    def received(self, octets: int, now: float) -> float:
        """
        A read of C{octets} arrived at C{now}.

        @return: the seconds left from C{now} (at most the timeout; 0 or
            less when the client is too slow).
        """
        if self._minRate <= 0:
            self._left = self._timeout
        else:
            left = self._left - (now - self._last) + octets / self._minRate
            self._left = min(self._timeout, left)
        self._last = now
        return self._left
