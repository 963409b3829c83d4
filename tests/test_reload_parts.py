"""
Tests for L{gopherpost.reload.parts}: what each part of the server reads
and how the reloadable ones take new settings.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, cast

from twisted.internet.defer import succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost.config import ConfigError, Settings
from gopherpost.reload.interfaces import IReconfigurable
from gopherpost.reload.parts import (
    ListenerFactories,
    RelayReload,
    ResolverReload,
    SwitchableResolver,
    WorkerReload,
)
from gopherpost.tap import Options, makeService
from tests.support.inbound import testSettings
from tests.support.server import serverEnvironment


class _SMTPFactory(Factory):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessionCount = 0


class ListenerFactoriesTests(SynchronousTestCase):
    """
    Generations of factories behind the listeners' switches.
    """

    def setUp(self) -> None:
        self.built: list[Settings] = []
        self.limits: list[Settings] = []
        self.changes: list[list] = []

    def build(self, settings: Settings):
        if settings.banner == "broken":
            raise ConfigError("SMTP_TLS_CERT", "does not load")
        self.built.append(settings)
        smtp = _SMTPFactory(settings)
        return [smtp], [smtp]

    def generations(self) -> ListenerFactories:
        return ListenerFactories(
            self.build, testSettings("/q"), self.limits.append, self.changes.append
        )

    def test_interface(self) -> None:
        """
        It is reloadable.
        """
        verifyObject(IReconfigurable, self.generations())

    def test_switch(self) -> None:
        """
        A reload builds a generation from the new settings, and applying it
        switches every listener to it and updates the shared limits; the
        old generation is drained at shutdown while it has sessions.
        """
        generations = self.generations()
        [switch] = generations.switches
        first: Any = switch.current
        first.sessionCount = 2
        new = testSettings("/q", banner="two")
        apply = generations.prepareReload(new)
        self.assertIs(switch.current, first)
        apply()
        self.assertEqual(cast(Any, switch.current).settings.banner, "two")
        self.assertEqual(self.limits, [new])
        self.assertEqual(generations.factories, [switch.current, first])
        self.assertEqual(self.changes[-1], [switch.current, first])
        first.sessionCount = 0
        self.assertEqual(generations.factories, [switch.current])

    def test_prepareFails(self) -> None:
        """
        A generation that cannot be built changes nothing.
        """
        generations = self.generations()
        [switch] = generations.switches
        first = switch.current
        self.assertRaises(
            ConfigError, generations.prepareReload, testSettings("/q", banner="broken")
        )
        self.assertIs(switch.current, first)
        self.assertEqual(self.limits, [])


class _Resolver:
    def __init__(self, servers) -> None:
        self.servers = servers
        self.asked: list = []

    def lookupMX(self, name):
        self.asked.append(("MX", name))
        return succeed([name])

    def lookupAddresses(self, name, lifetime=None):
        self.asked.append(("A", name, lifetime))
        return succeed([])

    def lookupPTR(self, address, lifetime=None):
        return succeed([address])

    def lookupTXT(self, name):
        return succeed([])

    def lookupRecords(self, name, kind):
        return succeed([kind])

    def forwardConfirmedNames(self, address, timeout=None):
        self.asked.append(("FCrDNS", address, timeout))
        return succeed([])


class ResolverTests(SynchronousTestCase):
    """
    New DNS servers for new lookups.
    """

    def test_delegates(self) -> None:
        """
        The holder answers as the resolver it holds.
        """
        inner = _Resolver((("127.0.0.1", 53),))
        holder = SwitchableResolver(inner)
        self.assertEqual(self.successResultOf(holder.lookupMX("a.test")), ["a.test"])
        holder.lookupAddresses("b.test", lifetime=3)
        holder.forwardConfirmedNames("127.0.0.2", 5)
        self.assertEqual(self.successResultOf(holder.lookupRecords("c.test", "TLSA")), ["TLSA"])
        self.assertEqual(self.successResultOf(holder.lookupPTR("127.0.0.1")), ["127.0.0.1"])
        self.assertEqual(self.successResultOf(holder.lookupTXT("d.test")), [])
        self.assertEqual(
            inner.asked,
            [("MX", "a.test"), ("A", "b.test", 3), ("FCrDNS", "127.0.0.2", 5)],
        )
        self.assertEqual(holder.servers, (("127.0.0.1", 53),))

    def test_reload(self) -> None:
        """
        A reload of the DNS servers switches the holder to a resolver for
        them.
        """
        holder = SwitchableResolver(_Resolver(()))
        part = ResolverReload(holder, _Resolver)
        verifyObject(IReconfigurable, part)
        new = testSettings("/q", dnsServers=(("127.0.0.2", 5353),))
        apply = part.prepareReload(new)
        self.assertEqual(holder.servers, ())
        apply()
        self.assertEqual(holder.servers, (("127.0.0.2", 5353),))


class _Queue:
    def __init__(self) -> None:
        self.calls: list = []

    def reconfigure(self, settings, courier, signer):
        self.calls.append((settings, courier, signer))


class RelayReloadTests(SynchronousTestCase):
    """
    The relay queue's C{reconfigure(settings, courier, signer)}.
    """

    def test_applies(self) -> None:
        """
        The DKIM key is read and the courier built when preparing; the
        queue gets them when applying.
        """
        queue = _Queue()
        part = RelayReload(queue, lambda s: ("courier", s.relayHost), lambda s: "signer")
        verifyObject(IReconfigurable, part)
        new = testSettings("/q", relayHost=("relay.test", 587))
        apply = part.prepareReload(new)
        self.assertEqual(queue.calls, [])
        self.successResultOf(apply())
        self.assertEqual(queue.calls, [(new, ("courier", ("relay.test", 587)), "signer")])

    def test_badKey(self) -> None:
        """
        A DKIM key that does not load stops the reload.
        """

        def failing(settings):
            raise ConfigError("SMTP_DKIM_KEY_PATH", "not a key")

        part = RelayReload(_Queue(), None, failing)
        self.assertRaises(ConfigError, part.prepareReload, testSettings("/q"))


class WorkerReloadTests(SynchronousTestCase):
    """
    Workers are told the variables after the certificate was checked here.
    """

    def test_tellsWorkers(self) -> None:
        told: list = []
        checked: list = []

        def tell(variables: Any) -> Any:
            told.append(variables)
            return succeed(None)

        part = WorkerReload(checked.append, tell, lambda: {"SMTP_BANNER": "x"})
        verifyObject(IReconfigurable, part)
        settings = testSettings("/q")
        apply = part.prepareReload(settings)
        self.assertEqual((checked, told), ([settings], []))
        apply()
        self.assertEqual(told, [{"SMTP_BANNER": "x"}])


class CoverageTests(SynchronousTestCase):
    """
    The server's reloader knows every setting.
    """

    def test_everyFieldHasAPart(self) -> None:
        """
        Every L{Settings} field is read by some part the reloader knows
        (reloadable or not): a new setting must be given to one (in
        L{gopherpost.reload.parts}), so that a reload says what happened to
        it.
        """
        environ = serverEnvironment(os.path.abspath(self.mktemp()), 2525)
        service = makeService(Options(), environ, Clock())
        fields = {f.name for f in dataclasses.fields(Settings)}
        self.assertEqual(fields - service.reloader.coveredFields, set())
