"""
Writes that go to the socket at once when nothing is queued before them.

A Twisted TCP transport buffers every write and sends it when the reactor
next reports the socket writable.  For a short reply to a command that costs
two C{epoll_ctl} calls (start and stop watching for writability) and one more
turn of the reactor, per reply; an SMTP session makes seven or more.  Asyncio
and most C servers instead try C{send()} straight away when their buffer is
empty, and queue only what the kernel did not take (Twisted's ticket #5303
discusses the same policy for Twisted itself).

L{writeNow} does that for one write, and otherwise leaves the transport to
do what it always does: anything queued, TLS, a closing connection or a send
error all go through C{transport.write}, so order and error handling are
Twisted's own.  Callers are expected to coalesce what belongs together into
one write (the inbound protocol holds its replies while it works through one
read's worth of pipelined commands).

"Nothing queued" is read from L{twisted.internet.abstract.FileDescriptor}'s
buffer attributes, two of them private (C{_tempDataLen},
C{_writeDisconnected}); they are the same from Twisted 22.4 (Debian 12) to
the current release, and C{tests.test_sendnow} runs on both.
"""

from twisted.internet import tcp
from twisted.internet.interfaces import ITransport

__all__ = ["writeNow"]


def writeNow(transport: ITransport, data: bytes) -> None:
    """
    Write C{data} to C{transport}, sending it at once if C{transport} is a
    plain TCP (or UNIX) connection with nothing queued; what the kernel does
    not take is queued behind it as C{transport.write} would.

    @param transport: any transport; only L{tcp.Connection}s are written to
        directly, anything else (TLS layers, test transports) gets
        C{transport.write(data)}.
    @param data: the bytes to send.
    """
    if (
        type(data) is bytes
        and data
        and isinstance(transport, tcp.Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport.dataBuffer
        and not transport._tempDataLen
    ):
        sent = transport.writeSomeData(data)
        # An exception instance means the connection is gone: the ordinary
        # write below queues the data, and the reactor's next attempt to
        # send it finds the same error and closes the connection as usual.
        if isinstance(sent, int) and sent > 0:
            if sent >= len(data):
                return
            data = data[sent:]
    transport.write(data)
