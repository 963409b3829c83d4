# -*- test-case-name: tests.test_variables -*-
"""
Every configuration variable GopherPost knows: its name, the L{Settings}
field it sets, and whether its value is a secret.

The table serves the start-up warning about unknown C{SMTP_*} variables
(with the closest known name), C{gopherpostctl config show} (each value
with its origin, secrets masked) and the reload's list of what changed.
A variable added to L{gopherpost.config} is added here too (the tests
check that every C{SMTP_*} name config.py reads is listed).
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Variable",
    "VARIABLES",
    "ENV_FILE_VARIABLE",
    "PREFIX",
    "byName",
    "variablesOfField",
    "unknownVariables",
    "closestName",
    "formatValue",
    "maskSecret",
    "effectiveValues",
]

#: The prefix of GopherPost's variables.
PREFIX = "SMTP_"
#: The variable naming the env file (see L{gopherpost.envfile}).
ENV_FILE_VARIABLE = "SMTP_ENV_FILE"


@dataclass(frozen=True)
class Variable:
    """
    One configuration variable.

    @ivar name: e.g. C{"SMTP_PORT"}.
    @ivar field: the L{gopherpost.config.Settings} field it sets, or
        L{None} for a variable read before the settings are built
        (C{SMTP_ENV_FILE}).
    @ivar secret: whether its value is never shown (C{config show}, logs).
    """

    name: str
    field: str | None
    secret: bool = False


def _v(name: str, field: str | None, secret: bool = False) -> Variable:
    return Variable(name, field, secret)


#: Every variable, in the order of the documentation (debian/gopherpost.env).
VARIABLES: tuple[Variable, ...] = (
    # Core
    _v("SMTP_ENV_FILE", None),
    _v("SMTP_PORT", "port"),
    _v("SMTP_LISTEN_ADDR", "listenAddress"),
    _v("SMTP_HOSTNAME", "hostname"),
    _v("SMTP_BANNER", "banner"),
    _v("SMTP_DEBUG", "debug"),
    _v("SMTP_QUEUE_PATH", "queuePath"),
    # Listeners
    _v("SMTP_LISTEN", "listen"),
    _v("SMTP_SUBMISSION_LISTEN", "submissionListen"),
    _v("SMTP_SUBMISSIONS_LISTEN", "submissionsListen"),
    # Health and metrics
    _v("SMTP_HEALTH_ADDR", "healthAddr"),
    _v("SMTP_HEALTH_PORT", "healthPort"),
    _v("SMTP_HEALTH_DISABLE", "healthDisable"),
    # Access control
    _v("SMTP_ALLOW_NETWORKS", "allowNetworks"),
    _v("SMTP_ALLOW_HOSTS", "allowHosts"),
    _v("SMTP_RELAY_NETWORKS", "relayNetworks"),
    _v("SMTP_REQUIRE_LOCAL_DOMAIN", "requireLocalDomain"),
    _v("SMTP_LOCAL_DOMAINS", "localDomains"),
    # Limits
    _v("SMTP_MAX_MESSAGE_SIZE", "maxMessageSize"),
    _v("SMTP_MAX_RECIPIENTS", "maxRecipients"),
    _v("SMTP_COMMAND_TIMEOUT", "commandTimeout"),
    _v("SMTP_MIN_DATA_RATE", "minDataRate"),
    _v("SMTP_MAX_CONNECTIONS", "maxConnections"),
    _v("SMTP_MAX_CONNECTIONS_PER_IP", "maxConnectionsPerIP"),
    _v("SMTP_WORKERS", "workers"),
    # Inbound TLS
    _v("SMTP_TLS_DISABLE", "tlsDisable"),
    _v("SMTP_TLS_CERT", "tlsCert"),
    _v("SMTP_TLS_KEY", "tlsKey"),
    # DNS
    _v("SMTP_DNS_SERVERS", "dnsServers"),
    # Outbound relay
    _v("SMTP_RELAY_HOST", "relayHost"),
    _v("SMTP_OUTBOUND_PORT", "outboundPort"),
    _v("SMTP_OUTBOUND_TLS", "outboundTLS"),
    _v("SMTP_OUTBOUND_TIMEOUT_SCALE", "outboundTimeoutScale"),
    _v("SMTP_RETRY_INITIAL", "retryInitial"),
    _v("SMTP_RETRY_MAX", "retryMax"),
    _v("SMTP_QUEUE_LIFETIME", "queueLifetime"),
    _v("SMTP_QUEUE_WORKERS", "queueWorkers"),
    _v("SMTP_DESTINATION_CONCURRENCY", "destinationConcurrency"),
    # DKIM
    _v("SMTP_DKIM_SELECTOR", "dkimSelector"),
    _v("SMTP_DKIM_KEY_PATH", "dkimKeyPath"),
    _v("SMTP_DKIM_PRIVATE_KEY", "dkimPrivateKey", secret=True),
    _v("SMTP_DKIM_DOMAIN", "dkimDomain"),
    # Internet MX checks (issue 16)
    _v("SMTP_SENDER_AUTH", "senderAuth"),
    _v("SMTP_SPF_REJECT", "spfReject"),
    _v("SMTP_DMARC_ENFORCE", "dmarcEnforce"),
    _v("SMTP_ARC_TRUSTED_SEALERS", "arcTrustedSealers"),
    _v("SMTP_DNSBL_ZONES", "dnsblZones"),
    _v("SMTP_RATE_CONNECTIONS", "rateConnections"),
    _v("SMTP_RATE_MESSAGES", "rateMessages"),
    _v("SMTP_RATE_RECIPIENTS", "rateRecipients"),
    _v("SMTP_RATE_USER_MESSAGES", "rateUserMessages"),
    _v("SMTP_GREYLIST", "greylist"),
    _v("SMTP_GREYLIST_DELAY", "greylistDelay"),
    _v("SMTP_GREYLIST_AUTO_WHITELIST", "greylistAutoWhitelist"),
    _v("SMTP_BAN_THRESHOLD", "banThreshold"),
    _v("SMTP_BAN_WINDOW", "banWindow"),
    _v("SMTP_BAN_DURATION", "banDuration"),
    _v("SMTP_BAN_MAX_DURATION", "banMaxDuration"),
    # The URL's password is masked (see maskSecret), not the whole value.
    _v("SMTP_REDIS_URL", "redisURL"),
    _v("SMTP_REDIS_PREFIX", "redisPrefix"),
    # Webhooks (issue 18)
    _v("SMTP_WEBHOOK_URL", "webhookURL"),
    _v("SMTP_WEBHOOK_SECRET", "webhookSecret", secret=True),
    _v("SMTP_WEBHOOK_SCOPE", "webhookScope"),
    _v("SMTP_WEBHOOK_MAX_INLINE", "webhookMaxInline"),
    _v("SMTP_WEBHOOK_RAW", "webhookRaw"),
    _v("SMTP_WEBHOOK_TIMEOUT", "webhookTimeout"),
    _v("SMTP_WEBHOOK_RETRY_INITIAL", "webhookRetryInitial"),
    _v("SMTP_WEBHOOK_RETRY_MAX", "webhookRetryMax"),
    _v("SMTP_WEBHOOK_LIFETIME", "webhookLifetime"),
    _v("SMTP_WEBHOOK_CONCURRENCY", "webhookConcurrency"),
    _v("SMTP_EVENTS_WEBHOOK_URL", "eventsWebhookURL"),
    _v("SMTP_EVENTS_WEBHOOK_SECRET", "eventsWebhookSecret", secret=True),
    # Content filters (issue 21)
    _v("SMTP_RSPAMD_URL", "rspamdURL"),
    _v("SMTP_RSPAMD_SCOPE", "rspamdScope"),
    _v("SMTP_RSPAMD_TIMEOUT", "rspamdTimeout"),
    _v("SMTP_FILTER_FAIL", "filterFail"),
    _v("SMTP_SPAMD", "spamd"),
    _v("SMTP_SPAMD_SCOPE", "spamdScope"),
    _v("SMTP_SPAMD_TIMEOUT", "spamdTimeout"),
    _v("SMTP_SPAMD_MAX_SIZE", "spamdMaxSize"),
    _v("SMTP_SPAM_REJECT_SCORE", "spamRejectScore"),
    _v("SMTP_MILTERS", "milters"),
    # Web UI, message index, capture mode (issue 17)
    _v("SMTP_WEB_LISTEN", "webListen"),
    _v("SMTP_WEB_AUTH", "webAuth", secret=True),
    _v("SMTP_CAPTURE", "capture"),
    _v("SMTP_CAPTURE_MAX_MESSAGES", "captureMaxMessages"),
    _v("SMTP_INDEX_RELAYED", "indexRelayed"),
    _v("SMTP_RELEASE_TO", "releaseTo"),
    # ACME (issue 22)
    _v("SMTP_ACME_DOMAINS", "acmeDomains"),
    _v("SMTP_ACME_EMAIL", "acmeEmail"),
    _v("SMTP_ACME_DIRECTORY", "acmeDirectory"),
    _v("SMTP_ACME_AGREE_TOS", "acmeAgreeTOS"),
    _v("SMTP_ACME_CHALLENGE_LISTEN", "acmeChallengeListen"),
    _v("SMTP_ACME_DIRECTORY_CA", "acmeDirectoryCA"),
    # Operations (issue 14): retention
    _v("SMTP_KEEP_DELIVERED", "keepDelivered"),
    _v("SMTP_RETENTION_DAYS", "retentionDays"),
    _v("SMTP_RETENTION_MAX_MESSAGES", "retentionMaxMessages"),
    # Authenticated submission (issue 15)
    _v("SMTP_USERS_FILE", "usersFile"),
    _v("SMTP_AUTH_ON_SMTP", "authOnSMTP"),
    _v("SMTP_AUTH_MAX_FAILURES", "authMaxFailures"),
    _v("SMTP_AUTH_CHECK_FROM", "authCheckFrom"),
    _v("SMTP_AUTH_LOCKOUT_FAILURES", "authLockoutFailures"),
    _v("SMTP_AUTH_USER_LOCKOUT_FAILURES", "authUserLockoutFailures"),
    _v("SMTP_AUTH_LOCKOUT_WINDOW", "authLockoutWindow"),
    _v("SMTP_AUTH_LOCKOUT_DURATION", "authLockoutDuration"),
    _v("SMTP_AUTH_LOCKOUT_MAX_DURATION", "authLockoutMaxDuration"),
)

_BY_NAME = {v.name: v for v in VARIABLES}


def byName(name: str) -> Variable | None:
    """
    The variable called C{name}, or L{None}.
    """
    return _BY_NAME.get(name)


def variablesOfField(field: str) -> list[str]:
    """
    The names of the variables that set the L{Settings} field C{field}
    (usually one; none for a derived field).
    """
    return [v.name for v in VARIABLES if v.field == field]


def unknownVariables(names: Iterable[str]) -> list[str]:
    """
    The C{SMTP_*} names among C{names} that GopherPost does not know,
    sorted.
    """
    return sorted({n for n in names if n.startswith(PREFIX) and n not in _BY_NAME})


def closestName(name: str) -> str | None:
    """
    The known variable whose name is closest to C{name} (a likely typo),
    or L{None} if none is close.
    """
    matches = difflib.get_close_matches(name, list(_BY_NAME), n=1, cutoff=0.75)
    return matches[0] if matches else None


def maskSecret(name: str, raw: str) -> str:
    """
    C{raw} as it may be shown: a secret variable's value as C{********},
    the password of a URL as C{***}; anything else as it is.
    """
    variable = _BY_NAME.get(name)
    if variable is not None and variable.secret:
        return "********" if raw else ""
    if "://" in raw:
        from gopherpost.config import redactURL

        return redactURL(raw)
    return raw


def formatValue(value: Any) -> str:
    """
    A settings value in the variables' own syntax: C{true}/C{false},
    comma-separated lists, C{host:port}, endpoint strings; C{""} for
    L{None} (unset).
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, tuple | list):
        if len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
            return _hostPort(value[0], value[1])
        return ",".join(formatValue(item) for item in value)
    description = getattr(value, "description", None)
    if isinstance(description, str):
        return description
    return str(value)


def _hostPort(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def effectiveValues(settings: Any, raw: Mapping[str, str]) -> dict[str, str]:
    """
    Each variable's effective value as text: the raw value where one is set
    (masked where secret), else the default the settings hold.

    @param settings: a L{gopherpost.config.Settings}.
    @param raw: the variables as set (environment and env file merged).
    """
    values = {}
    for variable in VARIABLES:
        text = raw.get(variable.name)
        if text is not None and text.strip():
            values[variable.name] = maskSecret(variable.name, text)
        elif variable.field is not None:
            values[variable.name] = maskSecret(
                variable.name, formatValue(getattr(settings, variable.field))
            )
        else:
            values[variable.name] = ""
    return values
