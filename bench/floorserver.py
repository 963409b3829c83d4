"""
The floor of Twisted's cost per SMTP message on this machine: a server that
gives C{smtp-source} fixed replies and stores nothing.

    python3 bench/floorserver.py PORT &
    smtp-source -s 20 -m 6000 -l 1024 -f a@bench.test -t b@bench.test 127.0.0.1:PORT

and read the process's CPU from C{/proc/PID/stat} before and after.  It
frames commands and finds the end of data with one C{find} per line, with
no checks at all: not an SMTP server, only what any server on the same
reactor spends at least.
"""

from __future__ import annotations

import sys

from twisted.internet import protocol, reactor

EHLO = b"250-floor.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"


class FloorSMTP(protocol.Protocol):
    """
    Fixed replies: 220, the EHLO list, 354 after DATA, 250 after the end
    of data and every other command, 221 and close after QUIT.
    """

    def connectionMade(self) -> None:
        self.buffer = b""
        self.inData = False
        self.transport.write(b"220 floor.bench.test ESMTP\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        replies = []
        while True:
            if self.inData:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                self.buffer = self.buffer[end + 5 :]
                self.inData = False
                replies.append(b"250 2.0.0 Ok\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            verb = line[:4].upper()
            if verb == b"EHLO":
                replies.append(EHLO)
            elif verb == b"DATA":
                replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.inData = True
                # The end of data may follow at once (an empty body).
                self.buffer = b"\r\n" + self.buffer
            elif verb == b"QUIT":
                replies.append(b"221 2.0.0 Bye\r\n")
                self.transport.write(b"".join(replies))
                self.transport.loseConnection()
                return
            else:
                replies.append(b"250 2.0.0 Ok\r\n")
        if replies:
            self.transport.write(b"".join(replies))


def main() -> None:
    factory = protocol.Factory.forProtocol(FloorSMTP)
    reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1", backlog=1024)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
