"""
Tests for C{gopherpostctl} (L{gopherpost.ctl}) without a running server:
help, exit statuses, the queue read from the spool, the configuration.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

from twisted.trial.unittest import SynchronousTestCase

from gopherpost import __version__
from gopherpost.ctl.main import buildParser
from gopherpost.ctl.registry import EXIT_FAILURE, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE
from gopherpost.relay.state import DELIVERED
from tests.support.operations import SpoolFixture, runCtl


def _subcommands() -> list[list[str]]:
    """
    Every command and subcommand, as argument lists.
    """
    import argparse

    found: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:  # argparse offers no public walk
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append(prefix + [name])
                    walk(sub, prefix + [name])

    walk(buildParser(), [])
    return found


class CommandLineTests(SynchronousTestCase):
    """
    Help, version, usage errors.
    """

    def invoke(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status, stdout, stderr = runCtl(list(args))
        return status, out.getvalue() + stdout, err.getvalue() + stderr

    def test_helpEverywhere(self) -> None:
        """
        Every command and subcommand has C{--help} (exit status 0).
        """
        commands = _subcommands()
        self.assertIn(["queue", "flush"], commands)
        self.assertIn(["config", "check"], commands)
        self.assertIn(["status"], commands)
        everything: list[list[str]] = [[], *commands]
        for command in everything:
            status, out, _ = self.invoke(*command, "--help")
            self.assertEqual(status, EXIT_OK, command)
            self.assertIn("usage: gopherpostctl", out)

    def test_jsonOnListings(self) -> None:
        """
        Every listing takes C{--json}.
        """
        for command in (
            ["queue", "list"],
            ["queue", "show"],
            ["queue", "summary"],
            ["config", "show"],
            ["status"],
            ["config", "reload"],
        ):
            _, out, _ = self.invoke(*command, "--help")
            self.assertIn("--json", out, command)

    def test_version(self) -> None:
        """
        C{--version} says GopherPost's version.
        """
        status, out, _ = self.invoke("--version")
        self.assertEqual((status, out), (EXIT_OK, f"gopherpostctl (GopherPost) {__version__}\n"))

    def test_usage(self) -> None:
        """
        No command, an unknown one, a missing argument: exit status 2.
        """
        for args in (
            [],
            ["frobnicate"],
            ["queue"],
            ["queue", "show"],
            ["queue", "list", "--limit", "x"],
        ):
            status, _, err = self.invoke(*args)
            self.assertEqual(status, EXIT_USAGE, args)
            self.assertIn("usage:", err)

    def test_actionsNeedServer(self) -> None:
        """
        What only the running server does fails with exit status 3 and a
        clear line when it is not running.
        """
        spool = SpoolFixture(self)
        for args in (
            ["queue", "flush", "--all"],
            ["queue", "hold", "X"],
            ["status"],
            ["config", "reload"],
        ):
            status, _, err = self.invoke("-q", spool.path, *args)
            self.assertEqual(status, EXIT_NOT_RUNNING, args)
            self.assertIn("gopherpostctl: the server is not running (nothing answers on ", err)

    def test_actionWithoutIds(self) -> None:
        """
        An action without queue ids (or --all) is a usage error.
        """
        status, _, err = self.invoke("queue", "flush")
        self.assertEqual(status, EXIT_USAGE)
        self.assertIn("name queue ids or --all", err)


class OfflineQueueTests(SynchronousTestCase):
    """
    C{queue list}, C{show}, C{summary} read the spool when the server is
    not running.
    """

    def setUp(self) -> None:
        self.fixture = SpoolFixture(self)

    def ctl(self, *args: str) -> tuple[int, str, str]:
        return runCtl(["-q", self.fixture.path, *args])

    def test_listEmpty(self) -> None:
        """
        An empty queue, as mailq says it.
        """
        status, out, err = self.ctl("queue", "list")
        self.assertEqual((status, out), (EXIT_OK, "Mail queue is empty\n"))
        self.assertIn("the server is not running: the queue read from", err)

    def test_list(self) -> None:
        """
        Each queued message with its pending recipients, their last error
        and attempts; finished and local messages are not listed.
        """
        queued = self.fixture.message([("a@remote.test", False), ("b@remote.test", False)])
        self.fixture.relayState(
            queued,
            {"b@remote.test": DELIVERED},
            attempts=2,
            lastError="4.4.1 No answer from any mail exchanger",
        )
        self.fixture.message([("me@local.test", True)])
        status, out, _ = self.ctl("queue", "list")
        self.assertEqual(status, EXIT_OK)
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("-Queue ID-"))
        self.assertTrue(lines[1].startswith(queued.queueId))
        self.assertTrue(lines[1].endswith("sender@local.test"))
        self.assertEqual(lines[2].strip(), "(4.4.1 No answer from any mail exchanger)")
        self.assertIn("a@remote.test  [2 attempts, next ", lines[3])
        self.assertNotIn("b@remote.test", out)
        self.assertEqual(lines[-1], "-- 1 Kbytes in 1 Request.")

    def test_listJSON(self) -> None:
        """
        C{--json} gives every field, for scripts.
        """
        queued = self.fixture.message()
        status, out, err = self.ctl("queue", "list", "--json")
        self.assertEqual(status, EXIT_OK)
        self.assertEqual(err, "")
        result = json.loads(out)
        self.assertEqual(result["count"], 1)
        [message] = result["messages"]
        self.assertEqual(message["queueId"], queued.queueId)
        self.assertEqual(message["recipients"][0]["status"], "pending")

    def test_listLimit(self) -> None:
        """
        C{--limit} shows the oldest N and says how many were left out.
        """
        for _ in range(3):
            self.fixture.message()
            self.fixture.clock.advance(1)
        _, out, _ = self.ctl("queue", "list", "--limit", "1")
        self.assertTrue(out.endswith("-- 1 Kbytes in 3 Requests. (2 not shown)\n"))

    def test_show(self) -> None:
        """
        One message: envelope, recipients, headers.
        """
        envelope = self.fixture.message(
            [("far@remote.test", False), ("me@local.test", True)],
            content=b"Subject: shown\r\nX-Id: 7\r\n\r\nthe body\r\n",
        )
        status, out, _ = self.ctl("queue", "show", envelope.queueId.lower())
        self.assertEqual(status, EXIT_OK)
        self.assertIn(f"Queue ID:   {envelope.queueId}\n", out)
        self.assertIn("State:      queued\n", out)
        self.assertIn("Sender:     <sender@local.test>\n", out)
        self.assertIn("  far@remote.test: pending, 0 attempts, next ", out)
        self.assertIn("  me@local.test: local\n", out)
        self.assertTrue(out.endswith("Headers:\n  Subject: shown\n  X-Id: 7\n"))
        self.assertNotIn("the body", out)

    def test_showBody(self) -> None:
        """
        C{--body} writes the message exactly as stored (8-bit included).
        """
        content = b"Subject: x\r\n\r\ncaf\xc3\xa9 \xff\r\n"
        envelope = self.fixture.message(content=content)
        status, out, _ = self.ctl("queue", "show", "--json", "--body", envelope.queueId)
        self.assertEqual(status, EXIT_OK)
        shown = json.loads(out)["content"].encode("utf-8", "surrogateescape")
        self.assertEqual(shown, content)

    def test_showUnknown(self) -> None:
        """
        An unknown or impossible id: exit status 1 and one line.
        """
        status, _, err = self.ctl("queue", "show", "0" * 19)
        self.assertEqual(
            (status, err), (EXIT_FAILURE, f"gopherpostctl: no message {'0' * 19} in the spool\n")
        )
        status, _, err = self.ctl("queue", "show", "../etc")
        self.assertEqual(
            (status, err), (EXIT_FAILURE, "gopherpostctl: '../etc' is not a queue id\n")
        )

    def test_summary(self) -> None:
        """
        The qshape table, and its JSON.
        """
        self.fixture.message([("a@one.test", False), ("b@one.test", False)])
        status, out, _ = self.ctl("queue", "summary")
        self.assertEqual(status, EXIT_OK)
        header, total, one = out.splitlines()
        self.assertEqual(header.split()[:3], ["T", "5", "10"])
        self.assertEqual(total.split()[:2], ["TOTAL", "2"])
        self.assertEqual(one.split()[:2], ["one.test", "2"])
        status, out, _ = self.ctl("queue", "summary", "--json")
        self.assertEqual(json.loads(out)["total"]["total"], 2)

    def test_spoolFromEnvFile(self) -> None:
        """
        Without C{--queue-path}, the spool is SMTP_QUEUE_PATH of the env
        file.
        """
        envelope = self.fixture.message()
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(f"SMTP_QUEUE_PATH={self.fixture.path}\n")
        status, out, _ = runCtl(["--env-file", path, "queue", "list"])
        self.assertEqual(status, EXIT_OK)
        self.assertIn(envelope.queueId, out)
        status, out, _ = runCtl(["queue", "list"], {"SMTP_QUEUE_PATH": self.fixture.path})
        self.assertIn(envelope.queueId, out)


class OfflineConfigTests(SynchronousTestCase):
    """
    C{config check} and C{config show} here.
    """

    def envFile(self, text: str) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_checkOK(self) -> None:
        """
        A valid configuration: exit status 0, one line; warnings on standard
        error.
        """
        path = self.envFile(
            "SMTP_HOSTNAME=mx.test\nSMTP_ALLOW_NETWORKS=127.0.0.1/32\nSMTP_PROT=1\n"
        )
        status, out, err = runCtl(["config", "check", "--env-file", path])
        self.assertEqual((status, out), (EXIT_OK, f"configuration OK (env file {path})\n"))
        self.assertEqual(
            err,
            "gopherpostctl: warning: SMTP_PROT: unknown variable; did you mean SMTP_PORT? "
            f"(in the env file {path}, line 3)\n",
        )

    def test_checkInvalid(self) -> None:
        """
        An invalid configuration: exit status 1 and the one-line error,
        saying where the value was set.
        """
        path = self.envFile("SMTP_HOSTNAME=mx.test\nSMTP_RETRY_MAX=10\nSMTP_RETRY_INITIAL=60\n")
        status, out, err = runCtl(["--env-file", path, "config", "check"])
        self.assertEqual((status, out), (EXIT_FAILURE, ""))
        self.assertEqual(
            err,
            "gopherpostctl: SMTP_RETRY_MAX: 10 is less than SMTP_RETRY_INITIAL (60) (set in the "
            f"env file {path}, line 2)\n",
        )

    def test_checkFiles(self) -> None:
        """
        Files are checked as start-up checks them: a certificate that is not
        one fails.
        """
        cert = self.envFile("not a certificate")
        key = self.envFile("not a key")
        path = self.envFile(f"SMTP_HOSTNAME=mx.test\nSMTP_TLS_CERT={cert}\nSMTP_TLS_KEY={key}\n")
        status, _, err = runCtl(["config", "check", "--env-file", path])
        self.assertEqual(status, EXIT_FAILURE)
        self.assertTrue(err.startswith("gopherpostctl: SMTP_TLS_CERT: "), err)
        self.assertEqual(err.count("\n"), 1)

    def test_checkMissingFile(self) -> None:
        """
        An env file that does not exist is an error.
        """
        status, _, err = runCtl(["config", "check", "--env-file", "/nonexistent.env"])
        self.assertEqual(status, EXIT_FAILURE)
        self.assertIn("does not exist", err)

    def test_showLocal(self) -> None:
        """
        Each variable with its value and origin, secrets masked; C{-n} only
        those set.
        """
        path = self.envFile(
            "SMTP_HOSTNAME=mx.test\nSMTP_DKIM_SELECTOR=s1\nSMTP_DKIM_PRIVATE_KEY=secretkey\n"
        )
        status, out, _ = runCtl(
            ["--env-file", path, "config", "show", "--local"], {"SMTP_BANNER": "Hello"}
        )
        self.assertEqual(status, EXIT_OK)
        lines = {line.split("=", 1)[0]: line for line in out.splitlines()}
        self.assertTrue(lines["SMTP_PORT"].startswith("SMTP_PORT=2525 "))
        self.assertTrue(lines["SMTP_PORT"].endswith("# default"))
        self.assertTrue(lines["SMTP_BANNER"].endswith("# environment"))
        self.assertTrue(lines["SMTP_HOSTNAME"].endswith(f"# env file {path}, line 1"))
        self.assertIn("SMTP_DKIM_PRIVATE_KEY=********", out)
        self.assertNotIn("secretkey", out)
        _, out, _ = runCtl(["--env-file", path, "config", "show", "--local", "-n"], {})
        self.assertEqual(
            [line.split("=")[0] for line in out.splitlines()],
            ["SMTP_ENV_FILE", "SMTP_HOSTNAME", "SMTP_DKIM_SELECTOR", "SMTP_DKIM_PRIVATE_KEY"],
        )
        _, out, _ = runCtl(["--env-file", path, "config", "show", "--local", "--json"], {})
        rows = {r["variable"]: r for r in json.loads(out)["variables"]}
        self.assertEqual(rows["SMTP_HOSTNAME"]["value"], "mx.test")

    def test_showServerDown(self) -> None:
        """
        Without a running server, C{config show} computes the configuration
        here and says so.
        """
        spool = SpoolFixture(self)
        status, _, err = runCtl(["-q", spool.path, "config", "show"], {"SMTP_HOSTNAME": "mx.test"})
        self.assertEqual(status, EXIT_OK)
        self.assertIn("the server is not running: computed from this environment", err)


class UnreadableSpoolTests(SynchronousTestCase):
    """
    A spool this user cannot read is one clear line, never a traceback.
    """

    def test_permissionDenied(self) -> None:
        """
        (Faked: the tests run as root, who may read anything.)
        """
        from gopherpost.queueview import QueueView

        def denied(self: QueueView) -> list[str]:
            raise PermissionError(13, "Permission denied", self.path)

        spool = SpoolFixture(self)
        self.patch(QueueView, "dateDirectories", denied)
        status, _, err = runCtl(["-q", spool.path, "queue", "list"])
        self.assertEqual(status, EXIT_FAILURE)
        self.assertIn(f"gopherpostctl: cannot read the spool {spool.path}: permission denied", err)
