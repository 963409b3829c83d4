"""
The Mailpit-compatible API over real HTTP: every endpoint, pagination,
search, errors.
"""

from __future__ import annotations

import json

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gopherpost.webui import api
from gopherpost.webui.api import MAX_LIMIT
from tests.support.mailstore import makeMessage, startWebUI, storeMessage, waitFor


@inlineCallbacks
def _fill(web, messages):
    """
    Store C{messages} (C{(raw, recipients)} or raw) and wait until all are
    indexed.  Fires with their envelopes, oldest first.
    """
    before = (yield web.mailbox.counts())[0]
    envelopes = []
    for entry in messages:
        raw, recipients = entry if isinstance(entry, tuple) else (entry, None)
        kwargs = {"recipients": recipients} if recipients else {}
        envelopes.append((yield storeMessage(web.spool, raw, **kwargs)))
    yield waitFor(
        lambda: web.mailbox.counts().addCallback(lambda c: c[0] >= before + len(envelopes))
    )
    return envelopes


class ListTests(TestCase):
    @inlineCallbacks
    def test_emptyMailbox(self):
        web = yield startWebUI(self)
        data = yield web.getJSON("/api/v1/messages")
        self.assertEqual(
            data,
            {
                "total": 0,
                "unread": 0,
                "count": 0,
                "messages_count": 0,
                "messages_unread": 0,
                "start": 0,
                "tags": [],
                "messages": [],
            },
        )

    @inlineCallbacks
    def test_summaryShape(self):
        web = yield startWebUI(self)
        raw = makeMessage(
            "Report",
            to="Bob <bob@gopherpost.test>",
            headers={"Cc": "carol@gopherpost.test", "X-Tags": "alpha, Beta"},
            attachments=[("report.pdf", "application/pdf", b"%PDF-1.4 ...")],
        )
        (envelope,) = yield _fill(
            web, [(raw, [("bob@gopherpost.test", True), ("dave@gopherpost.test", True)])]
        )
        data = yield web.getJSON("/api/v1/messages")
        self.assertEqual((data["total"], data["unread"], data["count"]), (1, 1, 1))
        self.assertEqual(data["tags"], ["alpha", "Beta"])
        (m,) = data["messages"]
        self.assertEqual(m["ID"], envelope.queueId)
        self.assertEqual(m["From"], {"Name": "Alice", "Address": "alice@client.test"})
        self.assertEqual(m["To"], [{"Name": "Bob", "Address": "bob@gopherpost.test"}])
        self.assertEqual(m["Cc"], [{"Name": "", "Address": "carol@gopherpost.test"}])
        self.assertEqual(m["Bcc"], [{"Name": "", "Address": "dave@gopherpost.test"}])
        self.assertEqual(m["Subject"], "Report")
        self.assertEqual(m["Attachments"], 1)
        self.assertEqual(m["Tags"], ["alpha", "Beta"])
        self.assertFalse(m["Read"])
        self.assertEqual(m["Size"], envelope.size)
        self.assertTrue(m["Created"].endswith("Z"))
        self.assertIn("Hello, Bob.", m["Snippet"])
        for key in ("MessageID", "ReplyTo", "Username"):
            self.assertIn(key, m)

    @inlineCallbacks
    def test_paginationNewestFirst(self):
        web = yield startWebUI(self)
        envelopes = yield _fill(web, [makeMessage(f"message {i}") for i in range(7)])
        ids = [e.queueId for e in reversed(envelopes)]
        page1 = yield web.getJSON("/api/v1/messages?limit=3")
        page2 = yield web.getJSON("/api/v1/messages?start=3&limit=3")
        page3 = yield web.getJSON("/api/v1/messages?start=6&limit=3")
        self.assertEqual([m["ID"] for m in page1["messages"]], ids[:3])
        self.assertEqual([m["ID"] for m in page2["messages"]], ids[3:6])
        self.assertEqual([m["ID"] for m in page3["messages"]], ids[6:])
        self.assertEqual((page2["start"], page2["count"], page2["messages_count"]), (3, 3, 7))
        past = yield web.getJSON("/api/v1/messages?start=50")
        self.assertEqual(past["messages"], [])

    @inlineCallbacks
    def test_oversizeLimitCapped(self):
        """
        A limit above MAX_LIMIT gets MAX_LIMIT messages (here made 2).
        """
        self.patch(api, "MAX_LIMIT", 2)
        web = yield startWebUI(self)
        yield _fill(web, [makeMessage(f"m{i}") for i in range(3)])
        data = yield web.getJSON(f"/api/v1/messages?limit={MAX_LIMIT * 10}")
        self.assertEqual((data["count"], data["messages_count"]), (2, 3))
        search = yield web.getJSON("/api/v1/search?query=subject:m&limit=100000")
        self.assertEqual(search["count"], 2)

    @inlineCallbacks
    def test_badPagination(self):
        web = yield startWebUI(self)
        for query in ("start=-1", "limit=ten", "start=1.5"):
            code, headers, body = yield web.request("GET", "/api/v1/messages?" + query)
            self.assertEqual(code, 400, query)


class SearchTests(TestCase):
    @inlineCallbacks
    def setUp(self):  # type: ignore[override]
        self.web = yield startWebUI(self)
        self.envelopes = yield _fill(
            self.web,
            [
                makeMessage(
                    "Invoice March", sender="Billing <billing@shop.test>", text="Total due"
                ),
                makeMessage(
                    "Welcome aboard",
                    to="new@gopherpost.test",
                    text="Thanks for joining",
                    headers={"X-Tags": "onboarding"},
                ),
                makeMessage(
                    "Photos",
                    text="see attached",
                    attachments=[("beach.jpg", "image/jpeg", b"\xff\xd8\xff")],
                ),
            ],
        )

    @inlineCallbacks
    def _ids(self, query, code=200):
        from urllib.parse import quote

        data = yield self.web.getJSON("/api/v1/search?query=" + quote(query), code)
        return [m["Subject"] for m in data["messages"]]

    @inlineCallbacks
    def test_operators(self):
        cases = {
            "invoice": ["Invoice March"],
            '"for joining"': ["Welcome aboard"],
            "from:billing@shop": ["Invoice March"],
            "to:new@": ["Welcome aboard"],
            "subject:photo": ["Photos"],
            "tag:onboarding": ["Welcome aboard"],
            "has:attachment": ["Photos"],
            "beach.jpg": ["Photos"],
            "-invoice -photos": ["Welcome aboard"],
            "is:unread": ["Photos", "Welcome aboard", "Invoice March"],
            "is:read": [],
            "after:2020-01-01": ["Photos", "Welcome aboard", "Invoice March"],
            "before:2020-01-01": [],
            "larger:100kb": [],
            "smaller:100kb": ["Photos", "Welcome aboard", "Invoice March"],
        }
        for query, expected in cases.items():
            found = yield self._ids(query)
            self.assertEqual(found, expected, query)

    @inlineCallbacks
    def test_messageIdSearch(self):
        record = yield self.web.mailbox.record(self.envelopes[0].queueId)
        found = yield self._ids("message-id:" + record["messageId"])
        self.assertEqual(found, ["Invoice March"])

    @inlineCallbacks
    def test_searchCounts(self):
        data = yield self.web.getJSON("/api/v1/search?query=subject:o&limit=1")
        self.assertEqual(data["messages_count"], 3)
        self.assertEqual(data["count"], 1)
        self.assertEqual(data["total"], 3)
        self.assertEqual(data["messages_unread"], 3)

    @inlineCallbacks
    def test_badQueries(self):
        for query in ("", "before:someday", "larger:huge", "is:maybe", "has:cake"):
            from urllib.parse import quote

            code, headers, body = yield self.web.request(
                "GET", "/api/v1/search?query=" + quote(query)
            )
            self.assertEqual(code, 400, (query, body))
        code, headers, body = yield self.web.request(
            "GET", "/api/v1/search?query=after:2020-01-01&tz=Not/AZone"
        )
        self.assertEqual(code, 400)

    @inlineCallbacks
    def test_deleteSearch(self):
        code, headers, body = yield self.web.request("DELETE", "/api/v1/search?query=invoice")
        self.assertEqual((code, body), (200, b"ok"))
        remaining = yield self._ids("is:unread")
        self.assertEqual(remaining, ["Photos", "Welcome aboard"])


class MessageTests(TestCase):
    @inlineCallbacks
    def setUp(self):  # type: ignore[override]
        self.web = yield startWebUI(self)
        self.raw = makeMessage(
            "Rich",
            text="plain body",
            html='<p>html <b>body</b> <img src="cid:logo"></p>',
            attachments=[("notes.txt", "text/plain", b"attached notes\n")],
            headers={
                "Reply-To": "replies@client.test",
                "List-Unsubscribe": "<mailto:unsub@client.test>, <https://client.test/u>",
            },
        )
        (self.envelope,) = yield _fill(self.web, [self.raw])
        self.mid = self.envelope.queueId

    @inlineCallbacks
    def test_message(self):
        m = yield self.web.getJSON(f"/api/v1/message/{self.mid}")
        self.assertEqual(m["ID"], self.mid)
        self.assertEqual(m["Subject"], "Rich")
        self.assertEqual(m["Text"].strip(), "plain body")
        self.assertIn("<b>body</b>", m["HTML"])
        self.assertEqual(m["ReplyTo"], [{"Name": "", "Address": "replies@client.test"}])
        self.assertEqual(m["Date"], "2026-12-01T10:00:00.000Z")
        self.assertEqual(
            m["ListUnsubscribe"]["Links"], ["mailto:unsub@client.test", "https://client.test/u"]
        )
        (attachment,) = m["Attachments"]
        self.assertEqual(attachment["FileName"], "notes.txt")
        self.assertEqual(attachment["ContentType"], "text/plain")
        self.assertEqual(attachment["Size"], len(b"attached notes\n"))
        self.assertEqual(set(attachment["Checksums"]), {"MD5", "SHA1", "SHA256"})
        for key in ("From", "To", "Cc", "Bcc", "MessageID", "Tags", "Inline", "Size", "Username"):
            self.assertIn(key, m)

    @inlineCallbacks
    def test_messageMarksRead(self):
        before = yield self.web.getJSON("/api/v1/messages")
        self.assertEqual(before["unread"], 1)
        yield self.web.getJSON(f"/api/v1/message/{self.mid}")
        after = yield self.web.getJSON("/api/v1/messages")
        self.assertEqual(after["unread"], 0)
        self.assertTrue(after["messages"][0]["Read"])

    @inlineCallbacks
    def test_latest(self):
        (newer,) = yield _fill(self.web, [makeMessage("Newer")])
        m = yield self.web.getJSON("/api/v1/message/latest")
        self.assertEqual(m["ID"], newer.queueId)
        headers = yield self.web.getJSON("/api/v1/message/latest/headers")
        self.assertEqual(headers["Subject"], ["Newer"])

    @inlineCallbacks
    def test_unknownId404(self):
        for path in ("", "/headers", "/raw", "/part/1", "/gopherpost"):
            code, headers, body = yield self.web.request("GET", f"/api/v1/message/NOSUCHID{path}")
            self.assertEqual(code, 404, path)

    @inlineCallbacks
    def test_latestOfNothing404(self):
        yield self.web.request("DELETE", "/api/v1/messages")
        code, headers, body = yield self.web.request("GET", "/api/v1/message/latest")
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_headers(self):
        headers = yield self.web.getJSON(f"/api/v1/message/{self.mid}/headers")
        self.assertEqual(list(headers), sorted(headers))
        self.assertEqual(headers["Subject"], ["Rich"])
        self.assertIn("Message-Id", headers)
        self.assertIn("Mime-Version", headers)

    @inlineCallbacks
    def test_raw(self):
        code, headers, body = yield self.web.request("GET", f"/api/v1/message/{self.mid}/raw")
        self.assertEqual(code, 200)
        self.assertEqual(body, self.raw)
        self.assertEqual(headers.getRawHeaders("X-Content-Type-Options"), ["nosniff"])
        self.assertIn("attachment", headers.getRawHeaders("Content-Disposition")[0])
        self.assertTrue(headers.getRawHeaders("Content-Type")[0].startswith("text/plain"))

    @inlineCallbacks
    def test_part(self):
        m = yield self.web.getJSON(f"/api/v1/message/{self.mid}")
        partId = m["Attachments"][0]["PartID"]
        code, headers, body = yield self.web.request(
            "GET", f"/api/v1/message/{self.mid}/part/{partId}"
        )
        self.assertEqual((code, body), (200, b"attached notes\n"))
        self.assertEqual(headers.getRawHeaders("X-Content-Type-Options"), ["nosniff"])
        disposition = headers.getRawHeaders("Content-Disposition")[0]
        self.assertTrue(disposition.startswith('attachment; filename="notes.txt"'))
        self.assertIn("sandbox", headers.getRawHeaders("Content-Security-Policy")[0])
        code, headers, body = yield self.web.request("GET", f"/api/v1/message/{self.mid}/part/9")
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_gopherpostDelivery(self):
        d = yield self.web.getJSON(f"/api/v1/message/{self.mid}/gopherpost")
        self.assertEqual(d["MailFrom"], "alice@client.test")
        self.assertEqual(d["RcptTo"], ["bob@gopherpost.test"])
        self.assertEqual(d["Client"]["Address"], "127.0.0.1")
        self.assertFalse(d["TLS"])
        self.assertEqual(
            d["Recipients"], [{"Address": "bob@gopherpost.test", "Local": True, "Status": "stored"}]
        )

    @inlineCallbacks
    def test_views(self):
        code, headers, body = yield self.web.request("GET", f"/view/{self.mid}.txt")
        self.assertEqual((code, body.strip()), (200, b"plain body"))
        code, headers, body = yield self.web.request("GET", f"/view/{self.mid}.html")
        self.assertEqual(code, 200)
        self.assertIn(b"<b>body</b>", body)
        policy = headers.getRawHeaders("Content-Security-Policy")[0]
        self.assertIn("sandbox", policy)
        self.assertNotIn("allow-scripts", policy)
        self.assertNotIn("allow-same-origin", policy)
        plain = yield _fill(self.web, [makeMessage("text only")])
        code, headers, body = yield self.web.request("GET", f"/view/{plain[0].queueId}.html")
        self.assertEqual(code, 404)


class ChangeTests(TestCase):
    @inlineCallbacks
    def setUp(self):  # type: ignore[override]
        self.web = yield startWebUI(self)
        self.envelopes = yield _fill(self.web, [makeMessage(f"m{i}") for i in range(3)])
        self.ids = [e.queueId for e in self.envelopes]

    @inlineCallbacks
    def test_setReadStatus(self):
        code, _, body = yield self.web.request(
            "PUT", "/api/v1/messages", json={"IDs": self.ids[:2], "Read": True}
        )
        self.assertEqual((code, body), (200, b"ok"))
        data = yield self.web.getJSON("/api/v1/messages")
        self.assertEqual(data["unread"], 1)
        yield self.web.request("PUT", "/api/v1/messages", json={"Read": True})
        data = yield self.web.getJSON("/api/v1/messages")
        self.assertEqual(data["unread"], 0)
        yield self.web.request(
            "PUT", "/api/v1/messages", json={"Search": "subject:m1", "Read": False}
        )
        data = yield self.web.getJSON("/api/v1/search?query=is:unread")
        self.assertEqual([m["Subject"] for m in data["messages"]], ["m1"])
        code, _, body = yield self.web.request(
            "PUT", "/api/v1/messages", json={"IDs": self.ids, "Search": "x"}
        )
        self.assertEqual(code, 400)

    @inlineCallbacks
    def test_deleteGivenIds(self):
        code, _, body = yield self.web.request(
            "DELETE", "/api/v1/messages", json={"IDs": [self.ids[0]]}
        )
        self.assertEqual((code, body), (200, b"ok"))
        data = yield self.web.getJSON("/api/v1/messages")
        self.assertEqual([m["ID"] for m in data["messages"]], [self.ids[2], self.ids[1]])
        code, _, _ = yield self.web.request("GET", f"/api/v1/message/{self.ids[0]}")
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_deleteAll(self):
        code, _, body = yield self.web.request("DELETE", "/api/v1/messages")
        self.assertEqual((code, body), (200, b"ok"))
        data = yield self.web.getJSON("/api/v1/messages")
        self.assertEqual(data["total"], 0)

    @inlineCallbacks
    def test_badBody(self):
        code, _, body = yield self.web.request(
            "DELETE",
            "/api/v1/messages",
            data=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        self.assertEqual(code, 400)
        data = yield self.web.getJSON("/api/v1/messages")
        self.assertEqual(data["total"], 3)

    @inlineCallbacks
    def test_tags(self):
        code, _, body = yield self.web.request(
            "PUT", "/api/v1/tags", json={"IDs": self.ids[:2], "Tags": ["red", "Blue!"]}
        )
        self.assertEqual(code, 200)
        tags = yield self.web.getJSON("/api/v1/tags")
        self.assertEqual(tags, ["Blue", "red"])
        yield self.web.request("PUT", "/api/v1/tags/red", json={"Name": "green"})
        data = yield self.web.getJSON("/api/v1/search?query=tag:green")
        self.assertEqual(len(data["messages"]), 2)
        yield self.web.request("DELETE", "/api/v1/tags/Blue")
        tags = yield self.web.getJSON("/api/v1/tags")
        self.assertEqual(tags, ["green"])
        info = yield self.web.getJSON("/api/v1/info")
        self.assertEqual(info["Tags"], {"green": 2})


class ApplicationTests(TestCase):
    @inlineCallbacks
    def test_info(self):
        web = yield startWebUI(self)
        yield _fill(web, [makeMessage("one")])
        info = yield web.getJSON("/api/v1/info")
        self.assertEqual((info["Messages"], info["Unread"]), (1, 1))
        for key in ("Version", "LatestVersion", "Database", "DatabaseSize", "Tags"):
            self.assertIn(key, info)
        self.assertEqual(info["RuntimeStats"]["SMTPAccepted"], 1)
        for key in ("Uptime", "Memory", "MessagesDeleted", "SMTPAcceptedSize", "SMTPRejected"):
            self.assertIn(key, info["RuntimeStats"])

    @inlineCallbacks
    def test_webui(self):
        web = yield startWebUI(self, releaseTo=("*@example.test",))
        config = yield web.getJSON("/api/v1/webui")
        self.assertTrue(config["MessageRelay"]["Enabled"])
        self.assertFalse(config["SpamAssassin"])
        self.assertFalse(config["ChaosEnabled"])
        capture = yield startWebUI(self, capture=True)
        config = yield capture.getJSON("/api/v1/webui")
        self.assertFalse(config["MessageRelay"]["Enabled"])

    @inlineCallbacks
    def test_disabledFeatures(self):
        """
        Features GopherPost has not answer as Mailpit does with them off.
        """
        web = yield startWebUI(self)
        (envelope,) = yield _fill(web, [makeMessage("x")])
        expected = {
            ("GET", "/api/v1/chaos"): 400,
            ("PUT", "/api/v1/chaos"): 400,
            ("GET", f"/api/v1/message/{envelope.queueId}/sa-check"): 404,
            ("GET", f"/api/v1/message/{envelope.queueId}/html-check"): 400,
            ("GET", f"/api/v1/message/{envelope.queueId}/link-check"): 400,
        }
        for (method, path), code in expected.items():
            status, _, _ = yield web.request(method, path)
            self.assertEqual(status, code, path)

    @inlineCallbacks
    def test_unknownPathsAndMethods(self):
        web = yield startWebUI(self)
        code, _, _ = yield web.request("GET", "/api/v1/nothing")
        self.assertEqual(code, 404)
        code, headers, _ = yield web.request("POST", "/api/v1/messages")
        self.assertEqual(code, 405)
        self.assertIn("GET", headers.getRawHeaders("Allow")[0])

    @inlineCallbacks
    def test_securityHeaders(self):
        web = yield startWebUI(self)
        for path in ("/", "/static/app.js", "/api/v1/messages"):
            code, headers, body = yield web.request("GET", path)
            self.assertEqual(code, 200, path)
            policy = headers.getRawHeaders("Content-Security-Policy")[0]
            self.assertIn("script-src 'self'", policy)
            self.assertNotIn("unsafe-inline", policy)
            self.assertEqual(headers.getRawHeaders("X-Content-Type-Options"), ["nosniff"])
        code, headers, body = yield web.request("GET", "/")
        self.assertNotIn(b"<script>", body)
        self.assertIn(b'<script src="/static/app.js"', body)

    @inlineCallbacks
    def test_oversizeBody(self):
        web = yield startWebUI(self, maxMessageSize=300_000)
        code, _, _ = yield web.request(
            "POST",
            "/api/v1/send",
            data=b"x" * 2_000_000,
            headers={"Content-Type": "application/json"},
        )
        self.assertEqual(code, 413)

    @inlineCallbacks
    def test_jsonIsUTF8(self):
        web = yield startWebUI(self)
        yield _fill(web, [makeMessage("Grüße ✉")])
        code, headers, body = yield web.request("GET", "/api/v1/messages")
        self.assertIn("Grüße ✉".encode(), body)
        self.assertEqual(json.loads(body)["messages"][0]["Subject"], "Grüße ✉")
