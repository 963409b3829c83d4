"""
A DNS server for the filters under test: it answers every query NXDOMAIN,
on UDP and TCP, on 127.0.0.1 and the port given.  rspamd and SpamAssassin
look names up (blocklists, SPF, their own maps); pointed here, none of
their queries ever leaves the machine and each fails at once.

Run as: python3 dnsstub.py PORT
"""

from __future__ import annotations

import socket
import struct
import sys
import threading


def answer(query: bytes) -> bytes | None:
    if len(query) < 12:
        return None
    ident, flags = struct.unpack("!HH", query[:4])
    end = 12
    while end < len(query) and query[end]:
        end += query[end] + 1
    question = query[12 : end + 5]
    # QR, opcode copied, AA, RD copied, RA, NXDOMAIN
    reply = 0x8000 | (flags & 0x7900) | 0x0400 | 0x0080 | 3
    return struct.pack("!HHHHHH", ident, reply, 1, 0, 0, 0) + question


def serveTCP(server: socket.socket) -> None:
    while True:
        connection, _ = server.accept()
        with connection:
            try:
                header = connection.recv(2)
                if len(header) < 2:
                    continue
                (length,) = struct.unpack("!H", header)
                data = b""
                while len(data) < length:
                    chunk = connection.recv(length - len(data))
                    if not chunk:
                        break
                    data += chunk
                reply = answer(data)
                if reply:
                    connection.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                pass


def main(port: int) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    tcp.listen(16)
    threading.Thread(target=serveTCP, args=(tcp,), daemon=True).start()
    while True:
        query, client = udp.recvfrom(4096)
        reply = answer(query)
        if reply:
            udp.sendto(reply, client)


if __name__ == "__main__":
    main(int(sys.argv[1]))
