"""
Tests for the webhook settings in L{gopherpost.config}: SMTP_WEBHOOK_* and
SMTP_EVENTS_WEBHOOK_*.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.config import ConfigError, settingsFromEnvironment
from tests.support.webhooks import newSecret

SECRET = newSecret()


def settings(**variables: str):
    environ = {"SMTP_HOSTNAME": "mx.gopherpost.test", "SMTP_HEALTH_DISABLE": "true"}
    environ.update(variables)
    return settingsFromEnvironment(environ, checkFiles=False)


class WebhookSettingsTests(SynchronousTestCase):
    def assertBad(self, variable: str, text: str, **variables: str) -> None:
        with self.assertRaises(ConfigError) as caught:
            settings(**variables)
        self.assertEqual(caught.exception.variable, variable)
        self.assertIn(text, str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))

    def test_defaults(self) -> None:
        s = settings()
        self.assertIsNone(s.webhookURL)
        self.assertIsNone(s.eventsWebhookURL)
        self.assertEqual(s.webhookScope, "local")
        self.assertEqual(s.webhookMaxInline, 1024 * 1024)
        self.assertFalse(s.webhookRaw)
        self.assertEqual(s.webhookTimeout, 15.0)
        self.assertEqual(s.webhookLifetime, 3 * 86400.0)
        self.assertEqual(s.webhookConcurrency, 4)
        self.assertEqual((s.webhookRetryInitial, s.webhookRetryMax), (10.0, 3600.0))

    def test_everything(self) -> None:
        s = settings(
            SMTP_WEBHOOK_URL="https://hooks.example.test:8443/in?x=1",
            SMTP_WEBHOOK_SECRET=SECRET,
            SMTP_WEBHOOK_SCOPE="all",
            SMTP_WEBHOOK_MAX_INLINE="64K",
            SMTP_WEBHOOK_RAW="true",
            SMTP_WEBHOOK_TIMEOUT="5",
            SMTP_WEBHOOK_RETRY_INITIAL="2",
            SMTP_WEBHOOK_RETRY_MAX="60",
            SMTP_WEBHOOK_LIFETIME="3600",
            SMTP_WEBHOOK_CONCURRENCY="8",
            SMTP_EVENTS_WEBHOOK_URL="http://127.0.0.1:9000/events",
        )
        self.assertEqual(s.webhookURL, "https://hooks.example.test:8443/in?x=1")
        self.assertEqual(s.webhookSecret, SECRET)
        self.assertEqual(s.webhookScope, "all")
        self.assertEqual(s.webhookMaxInline, 65536)
        self.assertTrue(s.webhookRaw)
        self.assertEqual(s.webhookTimeout, 5.0)
        self.assertEqual((s.webhookRetryInitial, s.webhookRetryMax), (2.0, 60.0))
        self.assertEqual(s.webhookLifetime, 3600.0)
        self.assertEqual(s.webhookConcurrency, 8)
        self.assertEqual(s.eventsWebhookURL, "http://127.0.0.1:9000/events")
        self.assertIsNone(s.eventsWebhookSecret)

    def test_urlDoesNotParse(self) -> None:
        for url, text in [
            ("ftp://example.test/", "http:// or https://"),
            ("example.test/hook", "http:// or https://"),
            ("http:///hook", "no host"),
            ("http://example.test:99999/", "not a URL"),
            ("http://example.test:x/", "not a URL"),
            ("http://exa mple.test/", "no spaces"),
            ("http://example.test/#frag", "fragment"),
        ]:
            self.assertBad(
                "SMTP_WEBHOOK_URL", text, SMTP_WEBHOOK_URL=url, SMTP_WEBHOOK_SECRET=SECRET
            )
            self.assertBad(
                "SMTP_EVENTS_WEBHOOK_URL",
                text,
                SMTP_EVENTS_WEBHOOK_URL=url,
                SMTP_WEBHOOK_SECRET=SECRET,
            )

    def test_secretRequired(self) -> None:
        self.assertBad("SMTP_WEBHOOK_SECRET", "required", SMTP_WEBHOOK_URL="http://h.test/")
        self.assertBad(
            "SMTP_EVENTS_WEBHOOK_SECRET", "required", SMTP_EVENTS_WEBHOOK_URL="http://h.test/"
        )

    def test_eventsSecretOwn(self) -> None:
        other = newSecret()
        s = settings(SMTP_EVENTS_WEBHOOK_URL="http://h.test/", SMTP_EVENTS_WEBHOOK_SECRET=other)
        self.assertEqual(s.eventsWebhookSecret, other)

    def test_badSecret(self) -> None:
        self.assertBad(
            "SMTP_WEBHOOK_SECRET",
            "whsec_",
            SMTP_WEBHOOK_URL="http://h.test/",
            SMTP_WEBHOOK_SECRET="hunter2",
        )
        self.assertBad(
            "SMTP_EVENTS_WEBHOOK_SECRET", "base64", SMTP_EVENTS_WEBHOOK_SECRET="whsec_%%%"
        )

    def test_badValues(self) -> None:
        self.assertBad("SMTP_WEBHOOK_SCOPE", "local, all", SMTP_WEBHOOK_SCOPE="remote")
        self.assertBad("SMTP_WEBHOOK_RAW", "boolean", SMTP_WEBHOOK_RAW="yes")
        self.assertBad("SMTP_WEBHOOK_MAX_INLINE", "size", SMTP_WEBHOOK_MAX_INLINE="lots")
        self.assertBad("SMTP_WEBHOOK_TIMEOUT", "at least 1", SMTP_WEBHOOK_TIMEOUT="0")
        self.assertBad("SMTP_WEBHOOK_CONCURRENCY", "out of range", SMTP_WEBHOOK_CONCURRENCY="0")
        self.assertBad("SMTP_WEBHOOK_LIFETIME", "seconds", SMTP_WEBHOOK_LIFETIME="3d")
        self.assertBad(
            "SMTP_WEBHOOK_RETRY_MAX",
            "less than SMTP_WEBHOOK_RETRY_INITIAL",
            SMTP_WEBHOOK_RETRY_INITIAL="60",
            SMTP_WEBHOOK_RETRY_MAX="30",
        )
