"""
Tests for L{gopherpost.reload.switch}: a listener's factory swapped for new
connections.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost.reload.switch import SwitchableFactory


class _Session(Protocol):
    busy = False


class _Recording(Factory):
    protocol = _Session

    def __init__(self) -> None:
        self.started = 0
        self.stopped = 0

    def startFactory(self) -> None:
        self.started += 1

    def stopFactory(self) -> None:
        self.stopped += 1

    def logPrefix(self) -> str:
        return "Recording"


class SwitchableFactoryTests(SynchronousTestCase):
    """
    New connections get the current factory; ports start and stop it.
    """

    def test_interface(self) -> None:
        """
        It is a protocol factory.
        """
        verifyObject(IProtocolFactory, SwitchableFactory(_Recording()))

    def test_buildsWithCurrent(self) -> None:
        """
        Protocols come from the factory switched to last; those built
        before keep theirs.
        """
        first, second = _Recording(), _Recording()
        switch = SwitchableFactory(first)
        old = switch.buildProtocol(None)
        self.assertIs(switch.switchTo(second), first)
        new = switch.buildProtocol(None)
        self.assertIs(old.factory, first)
        self.assertIs(new.factory, second)

    def test_startAndStop(self) -> None:
        """
        A listening port starts the current factory; switching starts the
        new one and stops the old one; the port's stop stops the current.
        """
        first, second = _Recording(), _Recording()
        switch = SwitchableFactory(first)
        switch.doStart()
        self.assertEqual((first.started, first.stopped), (1, 0))
        switch.switchTo(second)
        self.assertEqual((first.started, first.stopped), (1, 1))
        self.assertEqual((second.started, second.stopped), (1, 0))
        switch.doStop()
        self.assertEqual((second.started, second.stopped), (1, 1))
        switch.doStop()
        self.assertEqual(second.stopped, 1)

    def test_switchWhileNotListening(self) -> None:
        """
        A factory switched to before any port listens is not started.
        """
        first, second = _Recording(), _Recording()
        SwitchableFactory(first).switchTo(second)
        self.assertEqual((first.stopped, second.started), (0, 0))

    def test_logPrefix(self) -> None:
        """
        The port's log lines name the factory served.
        """
        self.assertEqual(SwitchableFactory(_Recording()).logPrefix(), "Recording")
        self.assertEqual(SwitchableFactory(Factory()).logPrefix(), "Factory")

    def test_busySessionCount(self) -> None:
        """
        Sessions built through it with a message in flight are counted,
        under wrappers too.
        """
        inner = _Recording()
        switch = SwitchableFactory(WrappingFactory(inner))
        wrapped = switch.buildProtocol(None)
        plainSwitch = SwitchableFactory(inner)
        plain = plainSwitch.buildProtocol(None)
        self.assertIsInstance(wrapped, ProtocolWrapper)
        self.assertEqual(switch.busySessionCount, 0)
        wrapped.wrappedProtocol.busy = True
        plain.busy = True
        self.assertEqual(switch.busySessionCount, 1)
        self.assertEqual(plainSwitch.busySessionCount, 1)
