"""
A fast webhook receiver for the webhook benchmark: HTTP/1.1 keep-alive on
127.0.0.1, answers every POST with 200 at once, and remembers the distinct
C{webhook-id}s it got.  C{GET /count} returns how many (and how many
requests) as JSON.  Standard library only (asyncio), so it costs little CPU
next to the server under test.

    python3 bench/webhookreceiver.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys

ids: set[bytes] = set()
requests = 0


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global requests
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method = lines[0].split(b" ", 1)[0]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"webhook-id":
                    ids.add(value.strip())
            if length:
                await reader.readexactly(length)
            if method == b"GET":
                body = json.dumps({"ids": len(ids), "requests": requests}).encode()
            else:
                requests += 1
                body = b""
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port, limit=1 << 20)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
