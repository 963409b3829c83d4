"""
Tests for the packaging: the twistd plugin, and the documentation and Debian
files that must stay in step with L{gopherpost.config} and
L{gopherpost.__version__}.

The file checks need a source checkout; they skip where only the package and
its tests are present (as in the Debian package build).
"""

from __future__ import annotations

import os
import re

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SkipTest, SynchronousTestCase

import gopherpost
from gopherpost import config, tap
from gopherpost.inbound.factory import SHUTDOWN_GRACE

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sourceFile(*segments: str) -> str:
    """
    Read a file of the source checkout, or skip the calling test.
    """
    path = os.path.join(_ROOT, *segments)
    if not os.path.isfile(path):
        raise SkipTest(f"{path} is not here: not a source checkout")
    with open(path, encoding="utf-8") as f:
        return f.read()


def _configVariables() -> set[str]:
    """
    Every C{SMTP_*} variable that L{gopherpost.config} reads.
    """
    with open(config.__file__, encoding="utf-8") as f:
        return set(re.findall(r'"(SMTP_[A-Z0-9_]+)"', f.read()))


def _unitValues(unit: str, key: str) -> list:
    return re.findall(rf"^{key}=(.*)$", unit, re.M)


def _settings(environ: dict[str, str]) -> config.Settings:
    return config.settingsFromEnvironment(
        environ, checkFiles=False, defaultHostname=lambda: "mx.example.test"
    )


class PluginTests(SynchronousTestCase):
    """
    C{twisted/plugins/gopherpost_plugin.py} makes C{twistd gopherpost}.
    """

    def test_serviceMaker(self) -> None:
        """
        Exactly one service maker has the tap name C{gopherpost}, and it uses
        L{gopherpost.tap}'s C{Options} and C{makeService}.
        """
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "gopherpost"]
        self.assertEqual(len(makers), 1)
        [maker] = makers
        self.assertEqual(maker.module, "gopherpost.tap")  # type: ignore[attr-defined]
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)


class VersionTests(SynchronousTestCase):
    """
    One version number: L{gopherpost.__version__}.
    """

    def test_debianChangelog(self) -> None:
        """
        The newest C{debian/changelog} entry packages
        L{gopherpost.__version__}.
        """
        changelog = _sourceFile("debian", "changelog")
        match = re.match(r"gopherpost \(([^)-]+)-[^)]+\)", changelog)
        self.assertIsNotNone(match, changelog.splitlines()[0])
        assert match is not None
        self.assertEqual(match.group(1), gopherpost.__version__)

    def test_setupCfg(self) -> None:
        """
        C{setup.cfg} takes the version from L{gopherpost.__version__}.
        """
        self.assertRegex(_sourceFile("setup.cfg"), r"(?m)^version = attr: gopherpost\.__version__$")


class ConfigurationDocumentationTests(SynchronousTestCase):
    """
    README.rst and the Debian conffile list every variable, and the conffile
    is safe and correct.
    """

    def setUp(self) -> None:
        self.variables = _configVariables()
        self.envFile = _sourceFile("debian", "gopherpost.env")
        self.unit = _sourceFile("debian", "gopherpost.service")
        self.listed = dict(re.findall(r"(?m)^#?(SMTP_[A-Z0-9_]+)=(.*)$", self.envFile))
        self.active = dict(re.findall(r"(?m)^(SMTP_[A-Z0-9_]+)=(.*)$", self.envFile))
        self.unitEnvironment = dict(
            item.split("=", 1) for item in _unitValues(self.unit, "Environment")
        )

    def test_readmeListsEveryVariable(self) -> None:
        """
        README.rst documents every variable L{gopherpost.config} reads.
        """
        readme = _sourceFile("README.rst")
        self.assertTrue(self.variables)
        self.assertEqual({v for v in self.variables if f"``{v}``" not in readme}, set())

    def test_envFileListsEveryVariable(self) -> None:
        """
        The conffile lists every variable, and no other.
        """
        self.assertEqual(set(self.listed), self.variables)

    def test_envFileCommentsAreDefaults(self) -> None:
        """
        Each commented-out line shows the value the service gets without it:
        setting it changes nothing.
        """
        base = dict(self.unitEnvironment)
        expected = _settings(base)
        for name, value in self.listed.items():
            if name in self.active:
                continue
            self.assertEqual(
                _settings(dict(base, **{name: value})),
                expected,
                f"#{name}={value} is not the default",
            )

    def test_envFileIsLocalOnly(self) -> None:
        """
        As shipped, the service accepts SMTP from loopback addresses only and
        serves HTTP on loopback only.
        """
        settings = _settings(dict(self.unitEnvironment, **self.active))
        self.assertTrue(settings.allowNetworks)
        for network in settings.allowNetworks:
            self.assertTrue(network.is_loopback, network)
        self.assertEqual(settings.allowHosts, ())
        self.assertEqual(config.healthAddress(settings), ("127.0.0.1", 8080))

    def test_unitWritesOnlyTheSpool(self) -> None:
        """
        The unit's only writable path is the spool it tells GopherPost to use,
        and the conffile names the same spool (for gopherpostctl).
        """
        self.assertEqual(
            _unitValues(self.unit, "ReadWritePaths"),
            [self.unitEnvironment["SMTP_QUEUE_PATH"]],
        )
        self.assertEqual(self.active["SMTP_QUEUE_PATH"], self.unitEnvironment["SMTP_QUEUE_PATH"])

    def test_unitReadsAndReloadsTheConffile(self) -> None:
        """
        GopherPost reads the conffile itself (not systemd's EnvironmentFile=,
        whose values would win over the file at a reload), and C{systemctl
        reload} sends SIGHUP.
        """
        self.assertEqual(
            _unitValues(self.unit, "ExecStart"),
            [
                "/usr/bin/twistd3 --nodaemon --pidfile= gopherpost "
                "--env-file /etc/gopherpost/gopherpost.env"
            ],
        )
        self.assertEqual(_unitValues(self.unit, "EnvironmentFile"), [])
        self.assertEqual(_unitValues(self.unit, "ExecReload"), ["/bin/kill -HUP $MAINPID"])
        # /bin/kill is procps' (not in a minimal system).
        control = _sourceFile("debian", "control")
        depends = control.split("Package: gopherpost", 1)[1].split("Description:", 1)[0]
        self.assertIn(" procps,", depends)
        install = _sourceFile("debian", "gopherpost.install")
        self.assertIn("debian/gopherpost.env etc/gopherpost/", install)

    def test_stopTimeoutCoversGrace(self) -> None:
        """
        systemd waits longer after SIGTERM (C{TimeoutStopSec=}) than
        GopherPost lets transactions in progress finish, so a stop never ends
        in SIGKILL.
        """
        [timeout] = _unitValues(self.unit, "TimeoutStopSec")
        self.assertEqual(_unitValues(self.unit, "KillSignal"), ["SIGTERM"])
        self.assertGreater(int(timeout), SHUTDOWN_GRACE + 5)


class UnitCapabilityTests(SynchronousTestCase):
    """
    The unit can bind the privileged SMTP ports, and socket activation's
    sockets get through its sandbox.
    """

    def test_privilegedPorts(self) -> None:
        """
        C{CAP_NET_BIND_SERVICE} (ports 25, 465 and 587) is granted and kept,
        and it is the only capability.
        """
        unit = _sourceFile("debian", "gopherpost.service")
        self.assertEqual(_unitValues(unit, "AmbientCapabilities"), ["CAP_NET_BIND_SERVICE"])
        self.assertEqual(_unitValues(unit, "CapabilityBoundingSet"), ["CAP_NET_BIND_SERVICE"])
        [families] = _unitValues(unit, "RestrictAddressFamilies")
        self.assertLessEqual({"AF_INET", "AF_INET6"}, set(families.split()))


class ControlCommandTests(SynchronousTestCase):
    """
    C{gopherpostctl} is installed by C{pip install .} and by the Debian
    package, with a manual page.
    """

    def test_consoleScript(self) -> None:
        """
        setup.cfg makes the C{gopherpostctl} console script of
        L{gopherpost.ctl.main.main}.
        """
        from gopherpost.ctl import main

        self.assertRegex(
            _sourceFile("setup.cfg"),
            r"(?m)^console_scripts =\n    gopherpostctl = gopherpost\.ctl\.main:main$",
        )
        self.assertTrue(callable(main.main))

    def test_manualPage(self) -> None:
        """
        The Debian package installs gopherpostctl(1), which names every
        command group.
        """
        from gopherpost.ctl.registry import loadGroups

        self.assertIn("debian/gopherpostctl.1", _sourceFile("debian", "gopherpost.manpages"))
        page = _sourceFile("debian", "gopherpostctl.1")
        for group in loadGroups():
            self.assertIn(f".B {group.name}", page)


class BuildTimeTestsTests(SynchronousTestCase):
    """
    C{debian/tests-not-at-build-time} names test modules that exist.
    """

    def test_modulesExist(self) -> None:
        """
        Every module it lists is a test module of the checkout (a renamed
        one would otherwise run at build time, or a typo hide nothing).
        """
        listed = [
            line.strip()
            for line in _sourceFile("debian", "tests-not-at-build-time").splitlines()
            if line.strip() and not line.startswith("#")
        ]
        self.assertTrue(listed)
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for module in listed:
            self.assertTrue(
                os.path.isfile(os.path.join(here, *module.split(".")) + ".py"),
                f"{module} is not a test module",
            )

    def test_peersListed(self) -> None:
        """
        Every test module that uses a test-only peer installed in the
        checkout (the standardwebhooks verifier, the npm packages, Pebble's
        helper) or a file of C{bench/} is listed: the build copy has none of
        them.
        """
        listed = set(_sourceFile("debian", "tests-not-at-build-time").split())
        markers = (
            "verifyWebhook(",
            "loadStandardWebhooks(",
            "startPebble(",
            "npm-install.sh",
            '"bench",',
        )
        tests = os.path.dirname(os.path.abspath(__file__))
        for name in sorted(os.listdir(tests)):
            if not (name.startswith("test_") and name.endswith(".py")):
                continue
            with open(os.path.join(tests, name), encoding="utf-8") as f:
                text = f.read()
            module = "tests." + name[: -len(".py")]
            if module != __name__ and any(marker in text for marker in markers):
                self.assertIn(module, listed, f"{module} needs a test-only peer")
