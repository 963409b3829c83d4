"""
Tests for L{gopherpost.variables}: the table of every variable.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re

from twisted.trial.unittest import SynchronousTestCase

from gopherpost import config, variables
from gopherpost.config import Settings
from gopherpost.listeners.endpoints import parseListeners


class VariablesTests(SynchronousTestCase):
    """
    The table, unknown names, values in the variables' syntax.
    """

    def test_everyVariableListed(self) -> None:
        """
        Every C{SMTP_*} name config.py reads is in the table (add new ones
        to L{variables.VARIABLES}), and every field named exists.
        """
        with open(os.path.join(os.path.dirname(config.__file__), "config.py")) as f:
            names = set(re.findall(r'"(SMTP_[A-Z0-9_]+)"', f.read()))
        listed = {v.name for v in variables.VARIABLES}
        self.assertEqual(names - listed, set())
        fields = {f.name for f in dataclasses.fields(Settings)}
        self.assertEqual(
            {v.field for v in variables.VARIABLES if v.field is not None} - fields, set()
        )

    def test_unknownAndClosest(self) -> None:
        """
        An C{SMTP_*} name not in the table is unknown, and a typo has a
        closest known name; other names are none of our business.
        """
        self.assertEqual(
            variables.unknownVariables(["SMTP_PROT", "SMTP_PORT", "PATH", "SMTP_WHATEVER_ELSE"]),
            ["SMTP_PROT", "SMTP_WHATEVER_ELSE"],
        )
        self.assertEqual(variables.closestName("SMTP_PROT"), "SMTP_PORT")
        self.assertEqual(variables.closestName("SMTP_MAX_RECIPIENT"), "SMTP_MAX_RECIPIENTS")
        self.assertIsNone(variables.closestName("SMTP_WHATEVER_ELSE"))

    def test_formatValue(self) -> None:
        """
        Values read back in the syntax the variables take.
        """
        fmt = variables.formatValue
        self.assertEqual(fmt(None), "")
        self.assertEqual(fmt(True), "true")
        self.assertEqual(fmt(3840.0), "3840")
        self.assertEqual(fmt(0.5), "0.5")
        self.assertEqual(fmt(("a.test", "b.test")), "a.test,b.test")
        self.assertEqual(fmt(("relay.test", 587)), "relay.test:587")
        self.assertEqual(fmt((("::1", 53),)), "[::1]:53")
        self.assertEqual(fmt((ipaddress.ip_network("127.0.0.1/32"),)), "127.0.0.1/32")
        self.assertEqual(
            fmt(parseListeners("SMTP_LISTEN", "tcp:25,tcp:2525:interface=127.0.0.1")),
            "tcp:25,tcp:2525:interface=127.0.0.1",
        )

    def test_masking(self) -> None:
        """
        A secret is never shown; a URL's password neither.
        """
        self.assertEqual(variables.maskSecret("SMTP_DKIM_PRIVATE_KEY", "secret"), "********")
        self.assertEqual(variables.maskSecret("SMTP_DKIM_PRIVATE_KEY", ""), "")
        self.assertEqual(
            variables.maskSecret("SMTP_REDIS_URL", "redis://u:pw@host:1/0"),
            "redis://u:***@host:1/0",
        )
        self.assertEqual(variables.maskSecret("SMTP_BANNER", "hello"), "hello")

    def test_variablesOfField(self) -> None:
        """
        A field is set by its variable.
        """
        self.assertEqual(variables.variablesOfField("maxRecipients"), ["SMTP_MAX_RECIPIENTS"])
        self.assertEqual(variables.variablesOfField("nothing"), [])
