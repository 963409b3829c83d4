"""
Mail entering through the API: Mailpit's send API and release.  Both
commit to the spool, whose observers (the relay queue among them) are told;
nothing calls the relay queue directly.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from gopherpost.interfaces import ISpoolObserver
from gopherpost.webui.send import SendRequestError, buildMessage, releasedMessage
from tests.support.mailstore import makeMessage, startWebUI, storeMessage, waitFor

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake image").decode()


@implementer(ISpoolObserver)
class _Observer:
    def __init__(self) -> None:
        self.envelopes: list = []

    def messageCommitted(self, envelope) -> None:
        self.envelopes.append(envelope)


def _request(**overrides):
    data = {
        "From": {"Email": "app@client.test", "Name": "The App"},
        "To": [{"Email": "bob@gopherpost.test", "Name": "Bob"}, {"Email": "far@remote.test"}],
        "Cc": [{"Email": "carol@gopherpost.test"}],
        "Bcc": ["hidden@gopherpost.test"],
        "ReplyTo": [{"Email": "support@client.test"}],
        "Subject": "Welcome, Bob ✓",
        "Text": "Hello in text",
        "HTML": '<p>Hello in <b>HTML</b> <img src="cid:logo"></p>',
        "Attachments": [
            {"Content": PNG, "Filename": "logo.png", "ContentID": "logo"},
            {"Content": base64.b64encode(b"a,b\n1,2\n").decode(), "Filename": "data.csv"},
        ],
        "Headers": {"X-Campaign": "spring"},
        "Tags": ["welcome", "api"],
    }
    data.update(overrides)
    return data


class BuildTests(TestCase):
    def test_built(self) -> None:
        built = buildMessage(_request(), "mx.gopherpost.test", 1796119200.0)
        self.assertEqual(built.sender, "app@client.test")
        self.assertEqual(
            built.recipients,
            [
                "bob@gopherpost.test",
                "far@remote.test",
                "carol@gopherpost.test",
                "hidden@gopherpost.test",
            ],
        )
        self.assertNotIn(b"\n", built.content.replace(b"\r\n", b""))
        message = email.message_from_bytes(built.content, policy=email.policy.default)
        self.assertEqual(message["Subject"], "Welcome, Bob ✓")
        self.assertEqual(message["X-Campaign"], "spring")
        self.assertEqual(message["X-Tags"], "welcome, api")
        self.assertIsNone(message["Bcc"])
        self.assertTrue(message["Message-ID"].endswith("@mx.gopherpost.test>"))
        names = [part.get_filename() for part in message.iter_attachments()]
        self.assertEqual(names, ["data.csv"])
        related = message.get_body(("related",))
        assert related is not None
        self.assertEqual([p["Content-ID"] for p in related.iter_parts()][1:], ["<logo>"])

    def test_refused(self) -> None:
        cases: list[dict[str, Any]] = [
            {"From": None},
            {"From": {"Email": "not an address"}},
            {"To": [{"Email": "bad@"}]},
            {"To": [], "Cc": [], "Bcc": []},
            {"Bcc": "x@y.test"},
            {"Headers": {"Subject": "sneaky"}},
            {"Headers": {"X-Evil": "a\r\nBcc: victim@x.test"}},
            {"Headers": {"Bad Name": "x"}},
            {"Subject": "two\r\nlines"},
            {"Attachments": [{"Content": "!!!not base64", "Filename": "x.bin"}]},
            {"Attachments": [{"Content": PNG}]},
            {"Tags": "one"},
        ]
        for overrides in cases:
            with self.assertRaises(SendRequestError, msg=overrides):
                buildMessage(_request(**overrides), "mx.gopherpost.test")

    def test_release(self) -> None:
        raw = (
            b"Received: from a\r\n\tby b\r\nBcc: secret@x.test\r\nDate: old\r\nMessage-ID: <old@x>\r\n"
            b"Subject: s\r\n\r\nbody\r\n.line\r\n"
        )
        released = releasedMessage(raw, "mx.gopherpost.test", 1796119200.0)
        head, _, body = released.partition(b"\r\n\r\n")
        self.assertEqual(body, b"body\r\n.line\r\n")
        self.assertNotIn(b"secret@x.test", head)
        self.assertNotIn(b"<old@x>", head)
        self.assertIn(b"Received: from a\r\n\tby b", head)
        self.assertEqual(head.count(b"Message-ID:"), 1)


class SendAPITests(TestCase):
    @inlineCallbacks
    def test_send(self):
        web = yield startWebUI(self)
        observer = _Observer()
        web.spool.addObserver(observer)
        self.addCleanup(web.spool.removeObserver, observer)
        code, headers, body = yield web.request("POST", "/api/v1/send", json=_request())
        self.assertEqual(code, 200, body)
        id = json.loads(body)["ID"]
        (envelope,) = observer.envelopes
        self.assertEqual(envelope.queueId, id)
        self.assertEqual(envelope.sender, "app@client.test")
        self.assertEqual([r.address for r in envelope.relayRecipients], ["far@remote.test"])
        self.assertEqual(envelope.helo, "api")
        yield waitFor(lambda: web.mailbox.counts().addCallback(lambda c: c[0] == 1))
        m = yield web.getJSON(f"/api/v1/message/{id}")
        self.assertEqual(m["Subject"], "Welcome, Bob ✓")
        self.assertEqual(sorted(m["Tags"]), ["api", "welcome"])
        self.assertEqual([a["FileName"] for a in m["Attachments"]], ["data.csv"])
        self.assertEqual([a["ContentID"] for a in m["Inline"]], ["logo"])
        self.assertIn({"Name": "", "Address": "hidden@gopherpost.test"}, m["Bcc"])
        headers = yield web.getJSON(f"/api/v1/message/{id}/headers")
        self.assertIn("(GopherPost API)", headers["Received"][0])
        self.assertIn("127.0.0.1", headers["Received"][0])

    @inlineCallbacks
    def test_sendErrorsAreJSON(self):
        web = yield startWebUI(self)
        code, headers, body = yield web.request(
            "POST", "/api/v1/send", json=_request(Headers={"From": "x@y.test"})
        )
        self.assertEqual(code, 400)
        self.assertEqual(json.loads(body), {"Error": 'cannot overwrite header: "From"'})
        code, headers, body = yield web.request(
            "POST", "/api/v1/send", data=b"nope", headers={"Content-Type": "application/json"}
        )
        self.assertEqual(code, 400)

    @inlineCallbacks
    def test_sendTooLarge(self):
        web = yield startWebUI(self, maxMessageSize=2000)
        big = base64.b64encode(b"x" * 5000).decode()
        code, _, body = yield web.request(
            "POST", "/api/v1/send", json=_request(Attachments=[{"Content": big, "Filename": "x"}])
        )
        self.assertEqual(code, 413)
        self.assertIn("Error", json.loads(body))


class ReleaseTests(TestCase):
    @inlineCallbacks
    def _stored(self, web):
        raw = makeMessage("to release", headers={"Bcc": "secret@gopherpost.test"})
        envelope = yield storeMessage(web.spool, raw)
        yield waitFor(lambda: web.mailbox.counts().addCallback(lambda c: c[0] == 1))
        return envelope

    @inlineCallbacks
    def test_release(self):
        web = yield startWebUI(self, releaseTo=("*@example.test",))
        original = yield self._stored(web)
        observer = _Observer()
        web.spool.addObserver(observer)
        self.addCleanup(web.spool.removeObserver, observer)
        code, _, body = yield web.request(
            "POST", f"/api/v1/message/{original.queueId}/release", json={"To": ["Dev@Example.test"]}
        )
        self.assertEqual((code, body), (200, b"ok"))
        (released,) = observer.envelopes
        self.assertEqual([r.address for r in released.relayRecipients], ["Dev@Example.test"])
        self.assertEqual(released.sender, "alice@client.test")
        content = yield web.spool.readMessage(released)
        self.assertNotIn(b"secret@gopherpost.test", content)
        self.assertIn(b"Subject: to release", content)

    @inlineCallbacks
    def test_releaseRefused(self):
        web = yield startWebUI(self, releaseTo=("*@example.test",))
        original = yield self._stored(web)
        path = f"/api/v1/message/{original.queueId}/release"
        bodies: list[dict[str, Any]] = [
            {"To": ["x@elsewhere.test"]},
            {"To": ["not an address"]},
            {"To": []},
            {},
        ]
        for body in bodies:
            code, _, text = yield web.request("POST", path, json=body)
            self.assertEqual(code, 400, (body, text))
        code, _, _ = yield web.request(
            "POST", "/api/v1/message/NOSUCH/release", json={"To": ["a@example.test"]}
        )
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_releaseDisabled(self):
        settings: list[dict[str, Any]] = [{}, {"capture": True, "releaseTo": ("*@example.test",)}]
        for overrides in settings:
            web = yield startWebUI(self, None, **overrides)
            original = yield self._stored(web)
            code, _, text = yield web.request(
                "POST",
                f"/api/v1/message/{original.queueId}/release",
                json={"To": ["a@example.test"]},
            )
            self.assertEqual(code, 400, overrides)
            self.assertIn(b"not enabled", text)
