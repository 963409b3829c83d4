# -*- test-case-name: tests.test_tlspolicy_report -*-
"""
TLS reports as RFC 8460 writes them: the C{_smtp._tls} TXT record that
says where reports go (section 3), the aggregate report as JSON (section
4.4), gzipped, its file name (section 5.1) and the report message for a
C{mailto:} address (section 5.3).  Pure functions.
"""

from __future__ import annotations

import calendar
import datetime
import gzip
import json
import re
import uuid
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import unquote, urlsplit

from gopherpost.tlspolicy.reportstore import DomainDay
from gopherpost.tlspolicy.results import POLICY_TYPE_NONE

__all__ = [
    "CONTENT_TYPE",
    "ReportRecordError",
    "parseReportRecord",
    "selectReportRecord",
    "reportId",
    "buildReport",
    "reportBody",
    "reportFilename",
    "reportMessage",
]

#: The media type of a gzipped report (RFC 8460 6.4).
CONTENT_TYPE = "application/tlsrpt+gzip"

_VERSION = "v=TLSRPTv1"
_SEPARATOR = re.compile(r"[ \t]*;[ \t]*")
_FIELD = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.\-]{0,31})=([^;]*)")
_ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")


class ReportRecordError(ValueError):
    """
    A C{_smtp._tls} record does not follow RFC 8460 3.
    """


def parseReportRecord(text: str) -> list[str]:
    """
    The C{rua} URIs of one TLSRPT record, C{mailto:} and C{https:} ones
    only (others are ignored, as RFC 8460 3 allows).

    @raise ReportRecordError: it does not follow the grammar, or has no
        C{rua}.
    """
    if not text.startswith(_VERSION):
        raise ReportRecordError("does not begin with v=TLSRPTv1")
    rest = text[len(_VERSION) :]
    rua: str | None = None
    while rest:
        separator = _SEPARATOR.match(rest)
        if separator is None:
            raise ReportRecordError(f"expected ';' before {rest[:20]!r}")
        rest = rest[separator.end() :]
        if not rest:
            break
        field = _FIELD.match(rest)
        if field is None:
            raise ReportRecordError(f"expected a field before {rest[:20]!r}")
        rest = rest[field.end() :]
        key, value = field.group(1), field.group(2).rstrip(" \t")
        if key == "rua" and rua is None:
            rua = value
    if rua is None:
        raise ReportRecordError("no rua field")
    uris = []
    for item in rua.split(","):
        uri = item.strip(" \t")
        if not uri:
            raise ReportRecordError("an empty rua URI")
        scheme = uri.partition(":")[0].lower()
        if scheme == "mailto":
            address = unquote(uri[len("mailto:") :].partition("?")[0])
            if _ADDRESS.fullmatch(address) is None:
                raise ReportRecordError(f"not a mail address: {address!r}")
            uris.append(f"mailto:{address}")
        elif scheme == "https":
            if not urlsplit(uri).hostname:
                raise ReportRecordError(f"not a URL: {uri!r}")
            uris.append(uri)
    return uris


def selectReportRecord(texts: Sequence[bytes]) -> list[str] | None:
    """
    The reporting URIs among a domain's C{_smtp._tls} TXT records: those
    not beginning with C{v=TLSRPTv1} are ignored; there must be exactly one.

    @return: the URIs, or L{None} when there is no record.
    @raise ReportRecordError: several records, or an invalid one.
    """
    candidates = [t.decode("ascii", "replace") for t in texts]
    candidates = [t for t in candidates if re.match(r"v=TLSRPTv1[ \t]*;", t)]
    if not candidates:
        return None
    if len(candidates) > 1:
        raise ReportRecordError(f"{len(candidates)} TLSRPT records")
    return parseReportRecord(candidates[0])


def reportId(submitter: str) -> str:
    """
    A new report id, unique (RFC 8460 4.4 C{report-id}).
    """
    return f"{uuid.uuid4()}@{submitter}"


def _dayBounds(day: str) -> tuple[int, int]:
    date = datetime.date.fromisoformat(day)
    start = calendar.timegm(date.timetuple())
    return start, start + 86399


def buildReport(
    domain: str,
    day: str,
    statistics: DomainDay,
    organization: str,
    contact: str,
    identifier: str,
) -> dict[str, Any]:
    """
    The aggregate report of one policy domain for one UTC day (RFC 8460 4.4).

    @param domain: the policy domain.
    @param day: C{"2026-12-01"}.
    @param statistics: the day's counts.
    @param organization: C{organization-name}.
    @param contact: C{contact-info}.
    @param identifier: C{report-id} (L{reportId}).
    """
    policies = []
    for key, counts in statistics.policies.items():
        policy: dict[str, Any] = {"policy-type": key.policyType, "policy-domain": domain}
        if key.policyType != POLICY_TYPE_NONE:
            if key.strings:
                policy["policy-string"] = list(key.strings)
            if key.mxHosts:
                policy["mx-host"] = list(key.mxHosts)
        details = []
        for detail, count in counts.failures.items():
            entry: dict[str, Any] = {"result-type": detail.resultType}
            if detail.receivingMX:
                entry["receiving-mx-hostname"] = detail.receivingMX
            if detail.receivingIP:
                entry["receiving-ip"] = detail.receivingIP
            entry["failed-session-count"] = count
            if detail.reason:
                entry["failure-reason-code"] = detail.reason
            details.append(entry)
        item: dict[str, Any] = {
            "policy": policy,
            "summary": {
                "total-successful-session-count": counts.successes,
                "total-failure-session-count": counts.failureCount,
            },
        }
        if details:
            item["failure-details"] = details
        policies.append(item)
    return {
        "organization-name": organization,
        "date-range": {
            "start-datetime": f"{day}T00:00:00Z",
            "end-datetime": f"{day}T23:59:59Z",
        },
        "contact-info": contact,
        "report-id": identifier,
        "policies": policies,
    }


def reportBody(report: dict[str, Any]) -> bytes:
    """
    The report as it is sent: JSON, gzipped.
    """
    data = json.dumps(report, indent=1, sort_keys=False).encode("utf-8")
    return gzip.compress(data, mtime=0)


def reportFilename(submitter: str, domain: str, day: str, unique: str = "") -> str:
    """
    The report's file name (RFC 8460 5.1):
    C{submitter!policy-domain!begin!end[!unique].json.gz}, times in POSIX
    seconds.
    """
    begin, end = _dayBounds(day)
    parts = [submitter, domain, str(begin), str(end)] + ([unique] if unique else [])
    return "!".join(parts) + ".json.gz"


def reportMessage(
    submitter: str,
    sender: str,
    recipient: str,
    domain: str,
    day: str,
    identifier: str,
    body: bytes,
    now: float,
) -> bytes:
    """
    The report message for a C{mailto:} address (RFC 8460 5.3):
    C{multipart/report; report-type="tlsrpt"} with a short text and the
    gzipped report.
    """
    message = EmailMessage()
    message["From"] = f"TLS reporting <{sender}>"
    message["To"] = recipient
    message["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{identifier}>"
    message["Date"] = formatdate(now, usegmt=True)
    message["Message-ID"] = make_msgid(domain=submitter)
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = submitter
    message.set_content(
        f"This is an aggregate TLS report (RFC 8460) from {submitter} for {domain},\n"
        f"covering {day} (UTC): the outcome of the TLS sessions {submitter} made\n"
        f"to deliver mail to {domain}.\n"
    )
    message.add_attachment(
        body,
        maintype="application",
        subtype="tlsrpt+gzip",
        filename=reportFilename(submitter, domain, day),
    )
    message.set_type("multipart/report")
    message.set_param("report-type", "tlsrpt")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
