"""
The outbound client's stage timeouts (RFC 5321 section 4.5.3.2), on the
reactor's clock.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.channel import TIMEOUTS
from gopherpost.relay.outcome import DEFERRED, DeliveryResult
from tests.support.clientsession import EHLO_REPLY, Conversation


class TimeoutTests(SynchronousTestCase):
    """
    Each stage's timeout, on the reactor's clock.
    """

    def assertTimesOut(self, c: Conversation, seconds: float, stage: str) -> DeliveryResult:
        c.reactor.advance(seconds - 0.5)
        self.assertFalse(c.transport.aborted, stage)
        c.reactor.advance(0.5)
        self.assertTrue(c.transport.aborted, stage)
        result = c.result()
        outcome = result.outcomes[0]
        self.assertEqual((outcome.status, outcome.enhancedCode), (DEFERRED, "4.4.2"), stage)
        self.assertIn("timeout", outcome.text)
        self.assertEqual(result.failureStage, stage)
        return result

    def conversationAt(self, stage: str, scale: float = 1.0) -> Conversation:
        c = Conversation(self, scale=scale)
        script = [
            ("greeting", "220 mx"),
            ("EHLO", EHLO_REPLY),
            ("MAIL", "250 ok"),
            ("RCPT", "250 ok"),
            ("DATA", "354 go"),
            ("end of data", "250 ok"),
        ]
        for name, reply in script:
            if name == stage:
                return c
            c.reply(reply)
        raise AssertionError(stage)

    def test_stages(self) -> None:
        """
        Greeting 300 s, EHLO 300 s, MAIL 300 s, RCPT 300 s, DATA 120 s,
        final dot 600 s.
        """
        for stage, seconds in (
            ("greeting", 300),
            ("EHLO", 300),
            ("MAIL", 300),
            ("RCPT", 300),
            ("DATA", 120),
            ("end of data", 600),
        ):
            self.assertEqual(TIMEOUTS[stage], seconds)
            self.assertTimesOut(self.conversationAt(stage), seconds, stage)

    def test_scaled(self) -> None:
        """
        C{timeoutScale} multiplies the timeouts.
        """
        self.assertTimesOut(self.conversationAt("greeting", scale=0.1), 30, "greeting")

    def test_timerResetEachStage(self) -> None:
        """
        Each reply restarts the clock: 299 s per stage never times out.
        """
        c = Conversation(self)
        for reply in ("220 mx", EHLO_REPLY, "250 ok", "250 ok"):
            c.reactor.advance(299)
            c.reply(reply)
        self.assertFalse(c.transport.aborted)

    def test_dataBlock(self) -> None:
        """
        A server that stops reading the body (the transport pauses us) for
        180 s: timeout.  Progress (resuming) restarts the clock.
        """
        c = Conversation(self, message=b"x\r\n" * 100000)
        for reply in ("220 mx", EHLO_REPLY, "250 ok", "250 ok"):
            c.reply(reply)
        c.transport.pauseAtWrite = c.transport.writes + 2
        c.reply("354 go")
        c.reactor.advance(179)
        c.transport.pauseAtWrite = c.transport.writes + 1
        assert c.transport.producer is not None
        c.transport.producer.resumeProducing()
        result = self.assertTimesOut(c, 180, "data block")
        self.assertIn("read the message", result.outcomes[0].text)
