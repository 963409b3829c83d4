"""
Who may use the web UI: the loopback rule of SMTP_WEB_LISTEN, SMTP_WEB_AUTH
(scrypt, basic authentication), DNS-rebinding and cross-origin refusal.
"""

from __future__ import annotations

import base64

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from gopherpost.config import ConfigError, settingsFromEnvironment
from gopherpost.webui import password
from gopherpost.webui.access import ScryptChecker
from gopherpost.webui.listen import endpointIsLocal, parseWebAuth
from tests.support.mailstore import startWebUI


def _environ(**extra):
    base = {"SMTP_HOSTNAME": "mx.gopherpost.test", "SMTP_HEALTH_DISABLE": "true"}
    base.update(extra)
    return base


def _fastHash(secret: str) -> str:
    return str(password.hashPassword(secret, n=16, r=1, p=1))


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


class SettingsTests(TestCase):
    def test_loopbackNeedsNoAuth(self) -> None:
        for listen in (
            "tcp:8025:interface=127.0.0.1",
            "tcp:8025:interface=127.0.0.2",
            "tcp6:8025:interface=\\:\\:1",
            "unix:/run/gopherpost/web.sock",
            "haproxy:tcp:8025:interface=127.0.0.1",
        ):
            settings = settingsFromEnvironment(_environ(SMTP_WEB_LISTEN=listen), checkFiles=False)
            self.assertEqual(settings.webListen, listen)
            self.assertIsNone(settings.webAuth)

    def test_elsewhereNeedsAuth(self) -> None:
        """
        A web listener that is not loopback-only is refused at start-up
        without SMTP_WEB_AUTH, naming SMTP_WEB_LISTEN.
        """
        for listen in (
            "tcp:8025",
            "tcp:8025:interface=0.0.0.0",
            "tcp6:8025",
            "systemd:domain=INET:index=0",
        ):
            with self.assertRaises(ConfigError) as raised:
                settingsFromEnvironment(_environ(SMTP_WEB_LISTEN=listen), checkFiles=False)
            self.assertEqual(raised.exception.variable, "SMTP_WEB_LISTEN")
        auth = "admin:" + _fastHash("secret")
        settings = settingsFromEnvironment(
            _environ(SMTP_WEB_LISTEN="tcp:8025", SMTP_WEB_AUTH=auth), checkFiles=False
        )
        self.assertEqual(settings.webAuth, ("admin", auth.split(":", 1)[1]))

    def test_badValues(self) -> None:
        for variables, name in (
            ({"SMTP_WEB_LISTEN": "nonsense"}, "SMTP_WEB_LISTEN"),
            ({"SMTP_WEB_LISTEN": "tcp:notaport:interface=127.0.0.1"}, "SMTP_WEB_LISTEN"),
            ({"SMTP_WEB_AUTH": "admin"}, "SMTP_WEB_AUTH"),
            ({"SMTP_WEB_AUTH": "admin:plaintext"}, "SMTP_WEB_AUTH"),
            ({"SMTP_WEB_AUTH": "admin:scrypt:1000:8:1$salt$abcd"}, "SMTP_WEB_AUTH"),
            ({"SMTP_CAPTURE": "yes"}, "SMTP_CAPTURE"),
            ({"SMTP_CAPTURE_MAX_MESSAGES": "-1"}, "SMTP_CAPTURE_MAX_MESSAGES"),
            ({"SMTP_INDEX_RELAYED": "1"}, "SMTP_INDEX_RELAYED"),
            ({"SMTP_RELEASE_TO": "not an address"}, "SMTP_RELEASE_TO"),
        ):
            with self.assertRaises(ConfigError) as raised:
                settingsFromEnvironment(_environ(**variables), checkFiles=False)
            self.assertEqual(raised.exception.variable, name, variables)
            self.assertNotIn("\n", str(raised.exception))

    def test_captureDefaults(self) -> None:
        """
        Capture mode: the UI on 127.0.0.1:8025, loopback clients allowed,
        any sender domain; each can be changed.
        """
        settings = settingsFromEnvironment(_environ(SMTP_CAPTURE="true"), checkFiles=False)
        self.assertTrue(settings.capture)
        self.assertEqual(settings.webListen, "tcp:8025:interface=127.0.0.1")
        self.assertEqual([str(n) for n in settings.allowNetworks], ["127.0.0.0/8", "::1/128"])
        self.assertFalse(settings.requireLocalDomain)
        self.assertEqual(settings.captureMaxMessages, 500)
        settings = settingsFromEnvironment(
            _environ(
                SMTP_CAPTURE="true",
                SMTP_WEB_LISTEN="none",
                SMTP_ALLOW_NETWORKS="10.0.0.0/8",
                SMTP_REQUIRE_LOCAL_DOMAIN="true",
                SMTP_CAPTURE_MAX_MESSAGES="0",
            ),
            checkFiles=False,
        )
        self.assertEqual(settings.webListen, "")
        self.assertEqual([str(n) for n in settings.allowNetworks], ["10.0.0.0/8"])
        self.assertTrue(settings.requireLocalDomain)
        self.assertEqual(settings.captureMaxMessages, 0)
        plain = settingsFromEnvironment(_environ(), checkFiles=False)
        self.assertEqual((plain.webListen, plain.capture), ("", False))

    def test_endpointIsLocal(self) -> None:
        self.assertTrue(endpointIsLocal("tcp:port=80:interface=127.0.0.1"))
        self.assertTrue(endpointIsLocal("tcp6:80:interface=\\:\\:ffff\\:127.0.0.1"))
        self.assertFalse(endpointIsLocal("tcp:80:interface=192.0.2.1"))
        self.assertFalse(endpointIsLocal("ssl:443"))


class PasswordTests(TestCase):
    def test_roundTrip(self) -> None:
        hashed = password.hashPassword("correct horse", n=16, r=1, p=1)
        parsed = password.parseScryptHash(str(hashed))
        self.assertTrue(parsed.verify("correct horse"))
        self.assertFalse(parsed.verify("wrong"))

    def test_werkzeugFormat(self) -> None:
        """
        A hash as Werkzeug writes it (scrypt:N:r:p$salt$hex) verifies.
        """
        import hashlib

        digest = hashlib.scrypt(b"pw", salt=b"saltsalt", n=16, r=1, p=1, dklen=64)
        parsed = password.parseScryptHash(f"scrypt:16:1:1$saltsalt${digest.hex()}")
        self.assertTrue(parsed.verify("pw"))

    def test_parseWebAuth(self) -> None:
        hashed = _fastHash("pw")
        self.assertEqual(parseWebAuth("X", f"me:{hashed}"), ("me", hashed))
        for bad in ("me", ":" + hashed, "me:", "m e:" + hashed):
            self.assertRaises(ConfigError, parseWebAuth, "X", bad)

    @inlineCallbacks
    def test_checker(self):
        checker = ScryptChecker({"me": _fastHash("pw")}, lambda f, *a: maybeDeferred(f, *a))
        self.assertTrue(verifyObject(ICredentialsChecker, checker))
        user = yield checker.requestAvatarId(UsernamePassword(b"me", b"pw"))
        self.assertEqual(user, "me")
        for name, secret in ((b"me", b"nope"), (b"you", b"pw"), (b"\xff", b"pw")):
            yield self.assertFailure(
                checker.requestAvatarId(UsernamePassword(name, secret)), UnauthorizedLogin
            )


class AuthenticationTests(TestCase):
    @inlineCallbacks
    def test_basicAuth(self):
        web = yield startWebUI(self, webAuth=("admin", _fastHash("s3cret")))
        code, headers, body = yield web.request("GET", "/api/v1/messages")
        self.assertEqual(code, 401)
        self.assertIn("Basic", headers.getRawHeaders("WWW-Authenticate")[0])
        code, _, _ = yield web.request(
            "GET", "/api/v1/messages", headers={"Authorization": _basic("admin", "wrong")}
        )
        self.assertEqual(code, 401)
        code, _, _ = yield web.request(
            "GET", "/api/v1/messages", headers={"Authorization": "Basic !!!"}
        )
        self.assertEqual(code, 401)
        for _ in range(2):  # the second is answered from the cache
            code, _, _ = yield web.request(
                "GET", "/api/v1/messages", headers={"Authorization": _basic("admin", "s3cret")}
            )
            self.assertEqual(code, 200)
        code, _, _ = yield web.request(
            "GET",
            "/",
            headers={"Authorization": _basic("admin", "s3cret"), "Host": "mail.example.test"},
        )
        self.assertEqual(code, 200)


class OriginTests(TestCase):
    @inlineCallbacks
    def test_rebindingRefused(self):
        """
        Without authentication, only loopback host names are served: a page
        elsewhere cannot reach the UI through DNS rebinding.
        """
        web = yield startWebUI(self)
        for host, code in (
            (f"127.0.0.1:{web.port}", 200),
            (f"localhost:{web.port}", 200),
            (f"[::1]:{web.port}", 200),
            (f"evil.example.test:{web.port}", 403),
            ("evil.example.test", 403),
        ):
            status, _, _ = yield web.request("GET", "/api/v1/messages", headers={"Host": host})
            self.assertEqual(status, code, host)

    @inlineCallbacks
    def test_crossOriginRefused(self):
        """
        State-changing requests from another origin are refused (CSRF);
        ours and those of non-browser clients are not.
        """
        web = yield startWebUI(self)
        own = f"http://127.0.0.1:{web.port}"
        for headers, code in (
            ({}, 200),
            ({"Origin": own}, 200),
            ({"Origin": "http://evil.example.test"}, 403),
            ({"Origin": f"http://localhost:{web.port + 1}"}, 403),
            ({"Origin": "null"}, 403),
            ({"Sec-Fetch-Site": "cross-site"}, 403),
            ({"Sec-Fetch-Site": "same-site"}, 403),
            ({"Sec-Fetch-Site": "same-origin", "Origin": own}, 200),
        ):
            status, _, body = yield web.request(
                "PUT", "/api/v1/messages", json={"Read": True}, headers=headers
            )
            self.assertEqual(status, code, (headers, body))
        status, _, _ = yield web.request(
            "GET", "/api/v1/messages", headers={"Origin": "http://evil.example.test"}
        )
        self.assertEqual(status, 200)
