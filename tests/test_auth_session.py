"""
Tests for L{gopherpost.auth.command}: the AUTH command of one session,
every reply of RFC 4954 and the issue, the delays, the per-session limit,
lockouts, the counter and the log lines.
"""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gopherpost.auth.command import FAILURE_DELAY
from gopherpost.auth.interfaces import IAuthCommand
from gopherpost.auth.lockout import LockoutParameters
from gopherpost.auth.metrics import RESULTS
from gopherpost.auth.replies import AuthReply
from gopherpost.auth.sasl import MAX_RESPONSE
from gopherpost.checks.store import MemoryStore, StoreUnavailable
from tests.support.auth import FakeContext, captureLogs, makeService

ALICE = "alice@example.org"
PASSWORD = "correct horse"


def b64(data: str | bytes) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


def plain(user: str = ALICE, password: str = PASSWORD, authzid: str = "") -> bytes:
    return b64(f"{authzid}\0{user}\0{password}")


def replies(response: Any) -> list[AuthReply]:
    return list(response) if isinstance(response, tuple) else [response]


class _FailingStore(MemoryStore):
    def bannedUntil(self, subject: str, now: float) -> defer.Deferred:
        return defer.fail(StoreUnavailable("down"))

    def addViolation(self, subject: str, now: float, parameters: Any) -> defer.Deferred:
        return defer.fail(StoreUnavailable("down"))


class AuthCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.service = self.makeService()
        self.context = FakeContext()
        self.command = self.service.newCommand(self.context)
        self.log = captureLogs(self)

    def makeService(self, **kwargs: Any) -> Any:
        return makeService(
            self.mktemp(),
            [(ALICE, PASSWORD), ("bob", "bob-pw", ["bob@example.net"])],
            self.clock,
            kwargs.pop("parameters", LockoutParameters(clientThreshold=5, userThreshold=10)),
            hostname="mx.example.test",
            **kwargs,
        )

    def answer(self, result: Any, wait: float = 0.0) -> list[tuple[int, str]]:
        """
        The replies of C{result}, waiting C{wait} seconds for them.
        """
        if isinstance(result, defer.Deferred):
            if wait:
                self.assertNoResult(result)
                self.clock.advance(wait)
            result = self.successResultOf(result)
        return [(r.code, r.text) for r in replies(result)]

    def auth(self, argument: bytes, wait: float = 0.0) -> list[tuple[int, str]]:
        return self.answer(self.command.command(argument, False), wait)

    def line(self, line: bytes, wait: float = 0.0) -> list[tuple[int, str]]:
        return self.answer(self.command.lineReceived(line), wait)

    def logText(self) -> str:
        return "\n".join(formatEvent(e) for e in self.log)

    def test_interface(self) -> None:
        verifyObject(IAuthCommand, self.command)

    def test_keyword(self) -> None:
        """
        AUTH is offered on the submission roles over TLS; on smtp only with
        C{SMTP_AUTH_ON_SMTP}; never in the clear.
        """
        self.assertEqual(self.command.keyword(), "AUTH PLAIN LOGIN")
        self.assertEqual(
            self.service.newCommand(FakeContext(role="submissions")).keyword(), "AUTH PLAIN LOGIN"
        )
        self.assertIsNone(self.service.newCommand(FakeContext(tls=None)).keyword())
        self.assertIsNone(self.service.newCommand(FakeContext(role="smtp")).keyword())
        self.service.onSMTP = True
        self.assertEqual(
            self.service.newCommand(FakeContext(role="smtp")).keyword(), "AUTH PLAIN LOGIN"
        )
        self.assertIsNone(self.service.newCommand(FakeContext(role="smtp", tls=None)).keyword())

    def test_plainInitialResponse(self) -> None:
        """
        PLAIN with an initial response: C{235 2.7.0}; the session knows the
        user and the mechanism; counted and logged.
        """
        self.assertEqual(self.auth(b"PLAIN " + plain()), [(235, "2.7.0 Authentication successful")])
        self.assertEqual(self.context.authenticatedUser, ALICE)
        self.assertEqual(self.context.authMechanism, "PLAIN")
        self.assertEqual(self.command.user.name, ALICE)
        self.assertFalse(self.command.inProgress)
        self.assertEqual(self.service.metrics.value("PLAIN", "success"), 1)
        self.assertIn(f"AUTH PLAIN for user {ALICE} from 192.0.2.10 succeeded", self.logText())

    def test_plainContinuation(self) -> None:
        """
        PLAIN without one: C{334 } (empty), then the response; the user name
        in any case.
        """
        self.assertEqual(self.auth(b"plain"), [(334, "")])
        self.assertTrue(self.command.inProgress)
        self.assertEqual(self.line(plain(ALICE.upper()))[0][0], 235)
        self.assertEqual(self.context.authenticatedUser, ALICE)

    def test_login(self) -> None:
        """
        LOGIN: C{334 VXNlcm5hbWU6}, C{334 UGFzc3dvcmQ6}, C{235}.
        """
        self.assertEqual(self.auth(b"LOGIN"), [(334, "VXNlcm5hbWU6")])
        self.assertEqual(self.line(b64("bob")), [(334, "UGFzc3dvcmQ6")])
        self.assertEqual(self.line(b64("bob-pw"))[0][0], 235)
        self.assertEqual(self.context.authMechanism, "LOGIN")
        self.assertEqual(self.service.metrics.value("LOGIN", "success"), 1)

    def test_loginInitialResponse(self) -> None:
        """
        LOGIN with the user name as its initial response.
        """
        self.assertEqual(self.auth(b"LOGIN " + b64("bob")), [(334, "UGFzc3dvcmQ6")])
        self.assertEqual(self.line(b64("bob-pw"))[0][0], 235)

    def test_wrongPasswordAfterDelay(self) -> None:
        """
        A wrong password: C{535 5.7.8}, only after the delay; counted and
        logged with the user and the client.
        """
        self.assertEqual(
            self.auth(b"PLAIN " + plain(password="nope"), wait=FAILURE_DELAY),
            [(535, "5.7.8 Authentication credentials invalid")],
        )
        self.assertIsNone(self.context.authenticatedUser)
        self.assertEqual(self.service.metrics.value("PLAIN", "failure"), 1)
        self.assertIn(
            f"AUTH PLAIN for user {ALICE} from 192.0.2.10 failed: wrong password "
            "(failure 1 of 3 in this session)",
            self.logText(),
        )

    def test_unknownUser(self) -> None:
        """
        A user that does not exist gets the same answer.
        """
        self.assertEqual(self.auth(b"PLAIN " + plain("carol"), wait=FAILURE_DELAY)[0][:1], (535,))
        self.assertIn("for user carol from 192.0.2.10 failed: no such user", self.logText())

    def test_tooManyFailures(self) -> None:
        """
        The third failure in a session is followed by C{421 4.7.0} and the
        close.
        """
        for _ in range(2):
            self.assertEqual(len(self.auth(b"PLAIN " + plain(password="x"), FAILURE_DELAY)), 1)
        response = self.command.command(b"PLAIN " + plain(password="x"), False)
        self.clock.advance(FAILURE_DELAY)
        last = replies(self.successResultOf(response))
        self.assertEqual(
            [(r.code, r.text, r.close) for r in last],
            [
                (535, "5.7.8 Authentication credentials invalid", False),
                (421, "4.7.0 mx.example.test Error: too many failed authentications", True),
            ],
        )

    def test_maxFailuresSetting(self) -> None:
        """
        C{SMTP_AUTH_MAX_FAILURES=1}: the first failure closes.
        """
        self.service.maxFailures = 1
        self.assertEqual(
            [c for c, _ in self.auth(b"PLAIN " + plain(password="x"), FAILURE_DELAY)],
            [535, 421],
        )

    def test_sequenceErrors(self) -> None:
        """
        C{503 5.5.1}: not enabled, before EHLO, after HELO only, a second
        AUTH, during a transaction.  None of them is delayed.
        """
        self.assertEqual(
            self.answer(self.service.newCommand(FakeContext(role="smtp")).command(b"PLAIN", False)),
            [(503, "5.5.1 Error: authentication not enabled")],
        )
        for context in (FakeContext(helo=None), FakeContext(extended=False)):
            self.assertEqual(
                self.answer(self.service.newCommand(context).command(b"PLAIN", False)),
                [(503, "5.5.1 Error: send EHLO first")],
            )
        self.assertEqual(
            self.answer(self.command.command(b"PLAIN", True)),
            [(503, "5.5.1 Error: MAIL transaction in progress")],
        )
        self.auth(b"PLAIN " + plain())
        self.assertEqual(
            self.auth(b"PLAIN " + plain()), [(503, "5.5.1 Error: already authenticated")]
        )

    def test_encryptionRequired(self) -> None:
        """
        In the clear: C{538 5.7.11}, the password not looked at.
        """
        command = self.service.newCommand(FakeContext(tls=None))
        self.assertEqual(
            self.answer(command.command(b"PLAIN " + plain(), False)),
            [(538, "5.7.11 Encryption required for requested authentication mechanism")],
        )
        self.assertEqual(self.service.metrics.value("PLAIN", "success"), 0)

    def test_syntax(self) -> None:
        """
        No mechanism, or more than a mechanism and a response: C{501 5.5.4}.
        """
        for argument in (b"", b"   ", b"PLAIN a b"):
            self.assertEqual(
                self.auth(argument), [(501, "5.5.4 Syntax: AUTH mechanism [initial-response]")]
            )

    def test_unknownMechanism(self) -> None:
        """
        CRAM-MD5 (never offered) and anything else: C{504 5.5.4}.
        """
        for argument in (b"CRAM-MD5", b"GSSAPI =", b"\xff\xfe"):
            self.assertEqual(self.auth(argument), [(504, "5.5.4 Unrecognized authentication type")])

    def test_cancel(self) -> None:
        """
        C{*} cancels at once with C{501 5.7.0}; it is not a failure.
        """
        self.auth(b"LOGIN")
        self.assertEqual(self.line(b"*"), [(501, "5.7.0 Authentication aborted")])
        self.assertFalse(self.command.inProgress)
        self.assertEqual(self.command.failures, 0)
        self.assertEqual(self.auth(b"PLAIN *"), [(501, "5.7.0 Authentication aborted")])
        self.assertEqual(sum(self.service.metrics.value("PLAIN", r) for r in RESULTS), 0)

    def test_malformed(self) -> None:
        """
        Not base64, empty, C{=} where a message is needed, NUL tricks: C{501
        5.5.2} after the delay, counted as malformed.
        """
        cases = [
            (b"PLAIN dXNlcg", None),
            (b"PLAIN =", None),
            (b"PLAIN " + b64("alice\0pw"), None),
            (b"PLAIN " + b64("\0alice\0pw\0"), None),
            (b"PLAIN", b""),
            (b"PLAIN", b"="),
            (b"LOGIN =", None),
            (b"LOGIN", b"!!"),
        ]
        for i, (argument, response) in enumerate(cases):
            command = self.service.newCommand(FakeContext(clientAddress=f"192.0.2.{100 + i}"))
            result = command.command(argument, False)
            if response is not None:
                self.assertEqual(self.answer(result)[0][0], 334)
                result = command.lineReceived(response)
            self.assertEqual(
                self.answer(result, FAILURE_DELAY),
                [(501, "5.5.2 Error: malformed authentication response")],
                (argument, response),
            )
            self.assertFalse(command.inProgress)
        self.assertEqual(
            self.service.metrics.value("PLAIN", "malformed")
            + self.service.metrics.value("LOGIN", "malformed"),
            len(cases),
        )

    def test_actAsSomeoneElse(self) -> None:
        """
        PLAIN with another authorization identity: C{535}, the password not
        checked.
        """
        self.assertEqual(self.auth(b"PLAIN " + plain(authzid="bob"), FAILURE_DELAY)[0][0], 535)
        self.assertIsNone(self.context.authenticatedUser)
        self.assertIn("asked to act as 'bob'", self.logText())

    def test_tooLong(self) -> None:
        """
        A response line (or AUTH command) over 12,288 octets: C{500 5.5.6};
        so is a line the framing found too long.
        """
        self.auth(b"PLAIN")
        self.assertEqual(
            self.line(b"A" * (MAX_RESPONSE + 1), FAILURE_DELAY),
            [(500, "5.5.6 Authentication Exchange line is too long")],
        )
        self.assertEqual(self.auth(b"PLAIN " + b"A" * MAX_RESPONSE, FAILURE_DELAY)[0][0], 500)
        self.auth(b"LOGIN")
        self.assertEqual(self.answer(self.command.lineTooLong(), FAILURE_DELAY)[0][0], 500)
        self.assertFalse(self.command.inProgress)

    def test_exactlyTheLimit(self) -> None:
        """
        A response of exactly 12,288 octets is taken (and fails on content).
        """
        self.auth(b"PLAIN")
        line = b64(b"\0alice@example.org\0" + b"p" * 1000).ljust(MAX_RESPONSE, b" ")
        self.assertEqual(len(line), MAX_RESPONSE)
        self.assertEqual(self.line(line, FAILURE_DELAY)[0][0], 535)

    def test_clientLockedOut(self) -> None:
        """
        A locked-out network: C{454 4.7.0} without the password checked,
        after the delay; counted as locked.
        """
        service = self.makeService(parameters=LockoutParameters(clientThreshold=2))
        for _ in range(2):
            self.answer(
                service.newCommand(FakeContext()).command(b"PLAIN " + plain(password="x"), False),
                FAILURE_DELAY,
            )
        command = service.newCommand(FakeContext())
        self.assertEqual(
            self.answer(command.command(b"PLAIN " + plain(), False), FAILURE_DELAY),
            [(454, "4.7.0 Temporary authentication failure")],
        )
        self.assertEqual(service.metrics.value("PLAIN", "locked"), 1)
        self.assertIn(
            "AUTH lockout: client network 192.0.2.10 locked out for 600 s", self.logText()
        )
        self.assertIn("from 192.0.2.10 refused: its network is locked out", self.logText())
        # Another network is not locked out.
        other = service.newCommand(FakeContext(clientAddress="192.0.2.99"))
        self.assertEqual(self.answer(other.command(b"PLAIN " + plain(), False))[0][0], 235)

    def test_userLockedOut(self) -> None:
        """
        A locked-out user: C{454 4.7.0} even with the right password.
        """
        service = self.makeService(parameters=LockoutParameters(clientThreshold=0, userThreshold=2))
        for address in ("198.51.100.1", "198.51.100.2"):
            self.answer(
                service.newCommand(FakeContext(clientAddress=address)).command(
                    b"PLAIN " + plain(password="x"), False
                ),
                FAILURE_DELAY,
            )
        self.assertIn(f"AUTH lockout: user {ALICE} locked out for 600 s", self.logText())
        command = service.newCommand(FakeContext())
        self.assertEqual(
            self.answer(command.command(b"PLAIN " + plain(), False), FAILURE_DELAY)[0][0], 454
        )
        self.assertIn(
            f"for user {ALICE} from 192.0.2.10 refused: the user is locked out", self.logText()
        )
        # bob is not.
        bob = service.newCommand(FakeContext())
        self.assertEqual(
            self.answer(bob.command(b"PLAIN " + plain("bob", "bob-pw"), False))[0][0], 235
        )

    def test_storeDown(self) -> None:
        """
        A state store that does not answer lets AUTH go on without
        lockouts (logged): the right password still works, a wrong one
        still fails.
        """
        service = self.makeService(store=_FailingStore())
        command = service.newCommand(FakeContext())
        self.assertEqual(
            self.answer(command.command(b"PLAIN " + plain(password="x"), False), FAILURE_DELAY)[0][
                0
            ],
            535,
        )
        self.assertEqual(self.answer(command.command(b"PLAIN " + plain(), False))[0][0], 235)
        self.assertIn("AUTH lockouts skipped for 192.0.2.10", self.logText())

    def test_checkerBroken(self) -> None:
        """
        A check that breaks (not a wrong password): C{454 4.7.0}, logged,
        not counted against the client.
        """
        self.patch(
            type(self.service.checker),
            "requestAvatarId",
            lambda self_, credentials: defer.fail(RuntimeError("thread pool gone")),
        )
        self.assertEqual(
            self.auth(b"PLAIN " + plain()), [(454, "4.7.0 Temporary authentication failure")]
        )
        self.assertEqual(self.command.failures, 0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_connectionLostDuringDelay(self) -> None:
        """
        A client that goes away while its failure waits: the timer is
        cancelled and nothing fires.
        """
        result = self.command.command(b"PLAIN " + plain(password="x"), False)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.command.connectionLost()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertNoResult(result)
        # And a failure after the loss is never answered.
        late = self.command.command(b"PLAIN " + plain(password="x"), False)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNoResult(late)

    def test_delayHoldsOnlyThisClient(self) -> None:
        """
        While one client waits for its failure, another authenticates at
        once.
        """
        slow = self.command.command(b"PLAIN " + plain(password="x"), False)
        other = self.service.newCommand(FakeContext(clientAddress="192.0.2.20"))
        self.assertEqual(self.answer(other.command(b"PLAIN " + plain(), False))[0][0], 235)
        self.assertNoResult(slow)
        self.clock.advance(FAILURE_DELAY)
        self.successResultOf(slow)

    def test_removedUserCannotLogIn(self) -> None:
        """
        A user removed from the file (seen within a second) can no longer
        authenticate.
        """
        path = self.service.directory.path
        with open(path) as f:
            lines = [line for line in f if not line.startswith(ALICE)]
        with open(path, "w") as f:
            f.writelines(lines)
        self.clock.advance(1)
        self.assertEqual(self.auth(b"PLAIN " + plain(), FAILURE_DELAY)[0][0], 535)

    def test_noException(self) -> None:
        """
        Whatever the lines, every answer is a reply (no exception), for a
        bounded, seeded run.
        """
        self.service.maxFailures = 10_000
        self.runFuzz()

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(
        st.lists(
            st.one_of(
                st.binary(max_size=40),
                st.sampled_from([b"*", b"=", b"", plain(), plain(password="x"), b64("bob")]),
                st.builds(
                    lambda m, r: m + b" " + r,
                    st.sampled_from([b"PLAIN", b"LOGIN", b"plain"]),
                    st.binary(max_size=30),
                ),
            ),
            max_size=8,
        )
    )
    def runFuzz(self, lines: list[bytes]) -> None:
        command = self.service.newCommand(FakeContext())
        for line in lines:
            if command.inProgress:
                result = command.lineReceived(line)
            else:
                result = command.command(line, False)
            if isinstance(result, defer.Deferred):
                self.clock.advance(FAILURE_DELAY)
                result = self.successResultOf(result)
            for reply in replies(result):
                self.assertIn(reply.code, (235, 334, 421, 454, 500, 501, 503, 504, 535), line)
                self.assertTrue(reply.text.isascii() and reply.text.isprintable(), reply.text)
        command.connectionLost()
