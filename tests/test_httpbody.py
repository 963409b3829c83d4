"""
Tests for L{gopherpost.httpbody}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IBodyProducer
from zope.interface.verify import verifyObject

from gopherpost.httpbody import BytesProducer


class BytesProducerTests(SynchronousTestCase):
    def test_writesAtOnce(self) -> None:
        """
        The body is written in one call, its length known beforehand.
        """
        written: list[bytes] = []

        class Consumer:
            def write(self, data: bytes) -> None:
                written.append(data)

        producer = BytesProducer(b"hello")
        verifyObject(IBodyProducer, producer)
        self.assertEqual(producer.length, 5)
        self.successResultOf(producer.startProducing(Consumer()))
        self.assertEqual(written, [b"hello"])
