# -*- test-case-name: tests.test_index_query -*-
"""
Mailpit's search syntax, turned into SQL for the index.

A query is words and C{"quoted phrases"}, all of which must match; a
C{-} (or C{!}) before one excludes what it matches.  Plain words and
phrases match the words of the message's search text (addresses, subject,
body, attachment names), case and accents ignored, the last word of each
as a prefix (C{invo} finds "invoice"; Mailpit matches any substring, so
C{voice} finds it there and not here).
Prefixed terms match one thing:

=========================  ==============================================
C{from:}, C{to:}, C{cc:},   the header's names and addresses (substring)
C{bcc:}, C{reply-to:}
C{addressed:}               any of those
C{subject:}                 the subject (substring)
C{message-id:}              the Message-ID (substring)
C{tag:}                     a tag (whole name, any case)
C{is:read}, C{is:unread},   read state; tagged at all
C{is:tagged}
C{has:attachment},          attachments; inline parts
C{has:inline}
C{before:}, C{after:}       received before/after a date or time
                            (C{2026-12-01}, C{2026-12-01T10:00},
                            RFC 2822 dates; in C{tz} or local time)
C{larger:}, C{smaller:}     size, e.g. C{larger:1M}, C{smaller:20kb}
=========================  ==============================================

Unlike Mailpit, which ignores what it cannot read, a date, size, C{is:} or
C{has:} value that means nothing is an error (L{QueryError}, HTTP 400), so
a typo does not silently match everything.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

__all__ = ["QueryError", "SearchQuery", "parseQuery", "parseTimestamp", "tokenize"]

_ADDRESS_COLUMNS = {
    "from": ("fromJSON",),
    "to": ("toJSON",),
    "cc": ("ccJSON",),
    "bcc": ("bccJSON",),
    "reply-to": ("replyToJSON",),
    "addressed": ("fromJSON", "toJSON", "ccJSON", "bccJSON", "replyToJSON"),
}

_SIZE = re.compile(r"^(\d+)(\.\d+)?\s?([a-z]{1,2})?$")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3}

_WORD = re.compile(r"[^\W_]")

_DATE_FORMATS = ("%Y/%m/%d", "%d %b %Y", "%d-%b-%Y", "%b %d %Y", "%Y%m%d", "%d/%m/%Y %H:%M")


class QueryError(ValueError):
    """
    A search query that cannot be run; the message is one line for the
    user.
    """


@dataclass
class SearchQuery:
    """
    A parsed query: SQL conditions on the C{messages m} table, to be
    joined with C{AND}, and their parameters in order; bounds on the
    received time (C{ranges}: C{(operator, microseconds)}, applied to the
    rowid, which is the received time in microseconds, so that the
    full-text table can apply them too); the read state asked for
    (C{read}); and the full-text phrases it must (C{match}) and must not
    (C{exclude}) contain, which run as one FTS5 query (see L{source}).
    """

    conditions: list[str] = field(default_factory=list)
    parameters: list[object] = field(default_factory=list)
    match: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    ranges: list[tuple[str, int]] = field(default_factory=list)
    read: int | None = None

    def add(self, condition: str, *parameters: object) -> None:
        self.conditions.append(condition)
        self.parameters.extend(parameters)

    def addRange(self, operator: str, seconds: float) -> None:
        """
        Only messages received at or after (C{">="}) or at or before
        (C{"<="}) C{seconds} since the epoch.
        """
        self.ranges.append((operator, int(seconds * 1_000_000)))

    def onlyWords(self) -> bool:
        """
        Whether the query is words (and received times) only: the
        full-text table alone answers it.
        """
        return self.matchExpression() is not None and not self.conditions and self.read is None

    def isFiltered(self) -> bool:
        """
        Whether it has conditions on the messages (beyond words): columns,
        tags, the read state or received times.
        """
        return bool(self.conditions or self.ranges or self.read is not None)

    def source(self) -> tuple[str, list[str], list[object], str]:
        """
        C{(FROM clause, conditions, parameters, rowid column)} of the query.

        With words to match, the full-text table drives the query: FTS5
        yields its matches in rowid order (which is received order), so the
        newest page is found without sorting every match, and the received
        times bound the rowids it yields.
        """
        conditions = list(self.conditions)
        parameters = list(self.parameters)
        if self.read is not None:
            # Alone, C{is:unread} walks the index on C{read} in rowid
            # order; beside other conditions, the index is left to them
            # (C{+}): most messages have one read state, and walking all
            # of them to find, say, the few with attachments is a scan.
            column = "+m.read" if conditions else "m.read"
            conditions.append(f"{column} = ?")
            parameters.append(self.read)
        expression = self.matchExpression()
        rowid = "fulltext.rowid" if expression is not None else "m.rowid"
        for operator, value in self.ranges:
            conditions.append(f"{rowid} {operator} ?")
            parameters.append(value)
        if expression is not None:
            # CROSS JOIN: the full-text table is always the outer loop.
            # Asked for one rowid at a time (a messages index driving),
            # FTS5 evaluates the whole query each time, prefixes and all:
            # milliseconds per message.
            return (
                "fulltext CROSS JOIN messages m ON m.rowid = fulltext.rowid",
                ["fulltext MATCH ?", *conditions],
                [expression, *parameters],
                rowid,
            )
        if self.exclude:
            conditions.append("m.rowid NOT IN (SELECT rowid FROM fulltext WHERE fulltext MATCH ?)")
            parameters.append(" OR ".join(self.exclude))
        return ("messages m", conditions, parameters, rowid)

    def matchExpression(self) -> str | None:
        """
        The FTS5 expression of the words to match (and not), or L{None}
        when there are none to match.
        """
        if not self.match:
            return None
        return " AND ".join(self.match) + "".join(f" NOT {x}" for x in self.exclude)

    def where(self) -> str:
        """
        The C{WHERE} clause of L{source} (empty when it matches everything).
        """
        _, conditions, _, _ = self.source()
        return ("WHERE " + " AND ".join(conditions)) if conditions else ""


def tokenize(text: str) -> list[str]:
    """
    Split a query as Mailpit does: at spaces outside double quotes; the
    quotes themselves are dropped (C{subject:"a b"} is one term).
    """
    terms: list[str] = []
    current: list[str] = []
    quoted = False
    for c in text:
        if c == '"':
            quoted = not quoted
        elif c.isspace() and not quoted:
            if current:
                terms.append("".join(current).strip())
                current = []
        else:
            current.append(c)
    if current:
        terms.append("".join(current).strip())
    return [t for t in terms if t]


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _size(value: str) -> int:
    match = _SIZE.match(value.strip().lower())
    if not match or (match.group(3) or "") not in _SIZE_UNITS:
        raise QueryError(f"{value!r} is not a size (e.g. 250kb, 1.5M)")
    number = float(match.group(1) + (match.group(2) or ""))
    return int(number * _SIZE_UNITS[match.group(3) or ""])


def _zone(tz: str | None) -> datetime.tzinfo | None:
    if not tz:
        return None
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(tz)
    except (KeyError, ValueError, OSError):
        raise QueryError(f"{tz!r} is not a time zone (e.g. Europe/Berlin)") from None


def _timestamp(value: str, zone: datetime.tzinfo | None) -> float:
    """
    A date or time as seconds since the epoch; naive times are in C{zone}
    (default: local time).
    """
    text = value.strip()
    parsed: datetime.datetime | None = None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    if parsed is None:
        for pattern in _DATE_FORMATS:
            try:
                parsed = datetime.datetime.strptime(text, pattern)
                break
            except ValueError:
                continue
    if parsed is None and ("," in text or len(text.split()) >= 4):
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            parsed = None
    if parsed is None:
        raise QueryError(f"{value!r} is not a date (e.g. 2026-12-01 or 2026-12-01T10:30)")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone) if zone is not None else parsed.astimezone()
    return parsed.timestamp()


def parseTimestamp(value: str, tz: str | None = None) -> float:
    """
    A date or time as seconds since the epoch (the forms of C{before:}).

    @raise QueryError: if it is not one, or C{tz} is not a time zone.
    """
    return _timestamp(value, _zone(tz))


def _fulltext(query: SearchQuery, term: str, exclude: bool) -> None:
    if _WORD.search(term):
        # A phrase of the term's words, the last one a prefix.
        phrase = '"' + term.replace('"', '""') + '"*'
        (query.exclude if exclude else query.match).append(phrase)
    else:
        # Only punctuation: no words to look up, a scan.
        negation = "NOT " if exclude else ""
        query.add(
            f"m.rowid {negation}IN (SELECT rowid FROM fulltext WHERE body LIKE ? ESCAPE '\\')",
            _like(term.lower()),
        )


def parseQuery(text: str, tz: str | None = None) -> SearchQuery:
    """
    Parse a Mailpit search query.

    @param tz: the time zone of naive C{before:}/C{after:} values.
    @raise QueryError: for a value that means nothing (see the module
        docstring).
    """
    query = SearchQuery()
    zone = _zone(tz)
    for raw in tokenize(text):
        exclude = False
        term = raw
        if len(term) > 1 and term[0] in "-!":
            exclude, term = True, term[1:]
        lowered = term.lower()
        prefix, sep, value = lowered.partition(":")
        original = term[len(prefix) + 1 :] if sep else ""
        if sep and prefix in _ADDRESS_COLUMNS:
            if not value:
                continue
            columns = _ADDRESS_COLUMNS[prefix]
            operator = "NOT LIKE" if exclude else "LIKE"
            joiner = " AND " if exclude else " OR "
            condition = joiner.join(f"m.{c} {operator} ? ESCAPE '\\'" for c in columns)
            query.add(f"({condition})", *[_like(value)] * len(columns))
        elif sep and prefix in ("subject", "message-id"):
            if not original:
                continue
            column = "m.subject" if prefix == "subject" else "m.messageId"
            query.add(f"{column} {'NOT ' if exclude else ''}LIKE ? ESCAPE '\\'", _like(original))
        elif sep and prefix == "tag":
            if not original:
                continue
            query.add(
                f"{'NOT ' if exclude else ''}EXISTS (SELECT 1 FROM tags t "
                "WHERE t.messageRowid = m.rowid AND t.name = ? COLLATE NOCASE)",
                original.strip(),
            )
        elif sep and prefix == "is":
            if value in ("read", "unread"):
                wanted = int((value == "read") != exclude)
                if query.read is not None and query.read != wanted:
                    query.add("0")  # is:read is:unread: nothing
                query.read = wanted
            elif value == "tagged":
                query.add(
                    f"{'NOT ' if exclude else ''}EXISTS "
                    "(SELECT 1 FROM tags t WHERE t.messageRowid = m.rowid)"
                )
            else:
                raise QueryError(f"{raw!r}: is: takes read, unread or tagged")
        elif sep and prefix == "has":
            if value in ("attachment", "attachments"):
                query.add("m.attachments = 0" if exclude else "m.attachments > 0")
            elif value in ("inline", "inlines"):
                query.add("m.inline = 0" if exclude else "m.inline > 0")
            else:
                raise QueryError(f"{raw!r}: has: takes attachment or inline")
        elif sep and prefix in ("before", "after"):
            if not value:
                continue
            when = _timestamp(original, zone)
            after = prefix == "after"
            query.addRange(">=" if after != exclude else "<=", when)
        elif sep and prefix in ("larger", "smaller"):
            if not value:
                continue
            size = _size(value)
            larger = prefix == "larger"
            if larger != exclude:
                query.add("m.size > ?", size)
            else:
                query.add("m.size < ?", size)
        else:
            _fulltext(query, term, exclude)
    return query
