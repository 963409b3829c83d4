"""
Two GopherPost nodes (real C{twistd gopherpost} processes, each with its own
spool) behind Debian's real HAProxy (PROXY protocol v2), sharing one real
Redis: the MX checks' state is the cluster's, the real client address is the
one counted, and Redis going away loses no mail.

Clients bind to their own loopback addresses (127.0.0.5, ...) so that the
address HAProxy names differs from the balancer's own.
"""

from __future__ import annotations

import os
import smtplib
import time
import uuid
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support.haproxy import startHAProxy
from tests.support.redisserver import startRedis
from tests.support.server import TwistdProcess, freePort, serverEnvironment

#: Seconds a new greylist triplet waits (short, so that the test can wait).
GREYLIST_DELAY = 3
#: Messages per client per minute.
RATE_MESSAGES = 3
RECIPIENT = "carol@gopherpost.test"
#: Seconds after a failure before a node tries Redis again (FailoverStore).
RETRY_AFTER = 5


class Client:
    """
    One SMTP session from C{source} through an HAProxy frontend, giving
    each reply as C{(code, text)} instead of raising.
    """

    def __init__(self, port: int, source: str) -> None:
        self.smtp = smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0))
        self.smtp.ehlo("client.test")

    def command(self, line: str) -> tuple[int, str]:
        code, text = self.smtp.docmd(line)
        return code, text.decode("utf-8", "replace")

    def send(self, sender: str, recipient: str, body: bytes) -> list[tuple[int, str]]:
        """
        One transaction; stops at the first refusal (and resets).
        """
        replies = [self.command(f"MAIL FROM:<{sender}>")]
        if replies[-1][0] == 250:
            replies.append(self.command(f"RCPT TO:<{recipient}>"))
        if replies[-1][0] == 250:
            replies.append(self.command("DATA"))
        if replies[-1][0] == 354:
            self.smtp.send(b"Subject: two nodes\r\n\r\n" + body + b"\r\n.\r\n")
            code, text = self.smtp.getreply()
            replies.append((code, text.decode("utf-8", "replace")))
        if replies[-1][0] != 250:
            self.command("RSET")
        return replies

    def close(self) -> None:
        try:
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()


def stored(queuePath: str) -> list[bytes]:
    """
    The content of every message stored in a spool.
    """
    found = []
    for directory in sorted(os.listdir(queuePath)):
        if not directory[:4].isdigit():
            continue
        for name in sorted(os.listdir(os.path.join(queuePath, directory))):
            if name.endswith(".eml"):
                with open(os.path.join(queuePath, directory, name), "rb") as f:
                    found.append(f.read())
    return found


class TwoNodesTests(TestCase):
    """
    Nodes A and B behind HAProxy frontends C{a} and C{b}, one Redis.
    """

    timeout = 240

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        self.redis = yield startRedis(self)
        root = os.path.abspath(self.mktemp())
        self.nodes: dict[str, TwistdProcess] = {}
        self.spools: dict[str, str] = {}
        ports = {}
        for name in ("a", "b"):
            ports[name] = freePort()
            self.spools[name] = os.path.join(root, name)
            environ = serverEnvironment(
                self.spools[name],
                0,
                SMTP_PORT="",
                SMTP_LISTEN=f"haproxy:tcp:{ports[name]}:interface=127.0.0.1",
                SMTP_HOSTNAME=f"mx-{name}.gopherpost.test",
                SMTP_ALLOW_NETWORKS="127.0.0.0/8",
                # Nobody may relay: every client gets the MX checks.
                SMTP_RELAY_NETWORKS="127.0.0.2/32",
                SMTP_REDIS_URL=self.redis.url,
                SMTP_SENDER_AUTH="false",
                SMTP_GREYLIST="true",
                SMTP_GREYLIST_DELAY=str(GREYLIST_DELAY),
                SMTP_RATE_MESSAGES=str(RATE_MESSAGES),
            )
            node = TwistdProcess(environ)
            self.addCleanup(self._stopNode, node)
            self.nodes[name] = node
        proxy = yield deferToThread(
            startHAProxy,
            self,
            os.path.join(root, "haproxy"),
            [("a", ports["a"], 2), ("b", ports["b"], 2)],
        )
        self.frontends = {name: proxy.frontends[name].port for name in ("a", "b")}
        yield deferToThread(self._waitForNodes)

    def _waitForNodes(self) -> None:
        # Through the balancer, from an address of its own: a node is up
        # when it greets (bounded, in a thread).
        for name, port in self.frontends.items():
            deadline = time.monotonic() + 90
            while True:
                if self.nodes[name].process.poll() is not None:
                    _, out, err = self.nodes[name].finish()
                    raise AssertionError(f"node {name} ended: {err.decode()[-2000:]}")
                try:
                    client = Client(port, "127.0.0.9")
                except (smtplib.SMTPException, OSError):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"node {name} did not greet in 90 s") from None
                    time.sleep(0.1)
                    continue
                client.close()
                break

    def _stopNode(self, node: TwistdProcess) -> None:
        if node.process.poll() is None:
            node.kill()

    def logs(self) -> dict[str, str]:
        """
        Stop both nodes (SIGTERM, as systemd would) and return their logs.
        """
        logs = {}
        for name, node in self.nodes.items():
            node.process.terminate()
            _, out, err = node.finish(timeout=60)
            logs[name] = (out + err).decode("utf-8", "replace")
        return logs

    def assertCleanLogs(self, logs: dict[str, str]) -> None:
        for name, log in logs.items():
            self.assertNotIn("Traceback", log, f"node {name}:\n{log[-4000:]}")

    def session(self, node: str, source: str) -> Client:
        return Client(self.frontends[node], source)

    @inlineCallbacks
    def assertRateShared(self, client: str, other: str) -> Any:
        """
        C{client} sends its whole message rate through node A; its next MAIL
        on node B is refused, C{other}'s is not.
        """

        def run() -> tuple[list[Any], list[Any], list[Any]]:
            onA = self.session("a", client)
            first = [onA.command("MAIL FROM:<dave@sender.test>")]
            for _ in range(RATE_MESSAGES - 1):
                onA.command("RSET")
                first.append(onA.command("MAIL FROM:<dave@sender.test>"))
            onA.close()
            onB = self.session("b", client)
            limited = [onB.command("MAIL FROM:<dave@sender.test>")]
            onB.close()
            fresh = self.session("b", other)
            notLimited = [fresh.command("MAIL FROM:<erin@sender.test>")]
            fresh.close()
            return first, limited, notLimited

        first, limited, notLimited = yield deferToThread(run)
        self.assertEqual([code for code, _ in first], [250] * RATE_MESSAGES, first)
        [(code, text)] = limited
        self.assertEqual(code, 450, text)
        self.assertIn("4.7.1", text)
        self.assertIn(f"[{client}]", text)
        self.assertIn("rate limit exceeded", text)
        self.assertEqual([code for code, _ in notLimited], [250])

    @inlineCallbacks
    def test_rateLimitShared(self) -> Any:
        """
        The messages a client sent through node A count on node B for the
        same (real) client address; another client is not limited.
        """

        yield self.assertRateShared("127.0.0.5", "127.0.0.6")
        self.assertCleanLogs((yield deferToThread(self.logs)))

    @inlineCallbacks
    def test_greylistShared(self) -> Any:
        """
        A triplet greylisted on node A passes on node B at its first try
        there once the delay is over (B alone would greylist it afresh);
        the message is stored in B's spool.
        """
        token = uuid.uuid4().hex.encode()

        def first() -> list[Any]:
            onA = self.session("a", "127.0.0.7")
            replies = onA.send("frank@sender.test", RECIPIENT, token)
            onA.close()
            return replies

        def retry() -> list[Any]:
            onB = self.session("b", "127.0.0.7")
            replies = onB.send("frank@sender.test", RECIPIENT, token)
            onB.close()
            return replies

        greylisted = yield deferToThread(first)
        self.assertEqual(greylisted[-1][0], 451, greylisted)
        self.assertIn("Greylisted", greylisted[-1][1])
        yield deferToThread(time.sleep, GREYLIST_DELAY + 1)
        passed = yield deferToThread(retry)
        self.assertEqual(passed[-1][0], 250, passed)
        [message] = [m for m in stored(self.spools["b"]) if token in m]
        self.assertIn(b"([127.0.0.7])", message.split(b"\r\n\r\n")[0])
        self.assertEqual(stored(self.spools["a"]), [])
        self.assertCleanLogs((yield deferToThread(self.logs)))

    @inlineCallbacks
    def test_redisStopped(self) -> Any:
        """
        Clients that retry on 4xx, as MTAs do, send through both nodes while
        Redis is killed halfway: every message is stored once, none is
        refused with a 5xx, and the nodes say that they went on with their
        own state.  Once Redis is back, the nodes use it again by themselves
        (a rate reached through A holds on B again).
        """
        tokens = [uuid.uuid4().hex.encode() for _ in range(6)]
        seen: list[tuple[int, str]] = []

        def deliver(index: int) -> None:
            node = "ab"[index % 2]
            source = f"127.0.0.{20 + index}"
            deadline = time.monotonic() + 60
            while True:
                client = self.session(node, source)
                replies = client.send("grace@sender.test", RECIPIENT, tokens[index])
                client.close()
                seen.extend(replies)
                if replies[-1][0] == 250:
                    return
                if replies[-1][0] >= 500 or time.monotonic() > deadline:
                    raise AssertionError(f"message {index} via {node}: {replies}")
                # As an MTA would: not at once (each try counts against
                # the client's message rate).
                time.sleep(GREYLIST_DELAY + 0.5)

        def run() -> None:
            for index in range(len(tokens)):
                if index == len(tokens) // 2:
                    self.redis.stop()
                deliver(index)

        yield deferToThread(run)
        self.assertEqual([code for code, _ in seen if code >= 500], [])
        everything = stored(self.spools["a"]) + stored(self.spools["b"])
        for token in tokens:
            self.assertEqual(len([m for m in everything if token in m]), 1, token)
        self.assertEqual(len(everything), len(tokens))

        yield self.redis.start()
        # The nodes try Redis again five seconds after it failed them.
        yield deferToThread(time.sleep, RETRY_AFTER + 1)
        yield self.assertRateShared("127.0.0.40", "127.0.0.41")
        logs = yield deferToThread(self.logs)
        self.assertCleanLogs(logs)
        for name, log in logs.items():
            self.assertIn("Redis unavailable", log, f"node {name} did not say Redis was gone")
            self.assertIn("Redis answers again", log, f"node {name} did not go back to Redis")
