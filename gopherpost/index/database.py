# -*- test-case-name: tests.test_index_database -*-
"""
The message index: one SQLite database (the standard library's sqlite3,
FTS5 for words, case and accents ignored) in the spool's state directory,
C{.gopherpost/index.sqlite3}.  FTS5's C{unicode61} tokenizer costs an
eighth of the C{trigram} one per message (25 against 190 us for 1 KiB of
text), which matters on the indexing path; words match by prefix
(C{invo} finds "invoice"), address searches (C{from:}, ...) by substring.

The spool is the source of truth; the index can always be rebuilt from it
(see L{gopherpost.index.worker}).  It is written in WAL mode with
C{synchronous=NORMAL}: a crash may forget the last transactions, never
corrupt it, and what is forgotten is found again at the next start.

Every method blocks: the index worker process writes new messages, the
server reads (and writes read flags, tags and deletions) from threads of
its own, each with its own connection.  Two writers wait for each other
(C{busy_timeout}).
"""

from __future__ import annotations

import datetime
import heapq
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from gopherpost.index.query import SearchQuery
from gopherpost.index.records import IndexRecord, encodeJSON

__all__ = [
    "SCHEMA_VERSION",
    "IndexCorrupt",
    "IndexDatabase",
    "isoTime",
    "removeDatabase",
]

#: Bumped whenever the schema changes: an index of another version is
#: rebuilt.
SCHEMA_VERSION = 4

#: Rows one C{IN (...)} list carries at most.
_CHUNK = 500

#: How much of the database each connection reads through a memory map
#: rather than C{read} calls into its own small page cache (SQLite's
#: default, 2 MiB): scans of 100,000 messages take a quarter of the time,
#: and the pages are the operating system's cache, shared by every
#: connection.
MMAP_SIZE = 1 << 30
#: The index worker's page cache (KiB): its inserts touch pages all over
#: the covering and full-text indexes, which SQLite's default 2 MiB keeps
#: reading again once the index holds some ten thousand messages (about a
#: fifth of an insert's CPU at 40,000).
WRITER_CACHE_KIB = 16 * 1024

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE messages (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    dateDirectory TEXT NOT NULL,
    received REAL NOT NULL,
    date REAL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    local INTEGER NOT NULL,
    fromJSON TEXT NOT NULL,
    toJSON TEXT NOT NULL,
    ccJSON TEXT NOT NULL,
    bccJSON TEXT NOT NULL,
    replyToJSON TEXT NOT NULL,
    subject TEXT NOT NULL,
    messageId TEXT NOT NULL,
    size INTEGER NOT NULL,
    attachments INTEGER NOT NULL,
    inline INTEGER NOT NULL,
    attachmentNames TEXT NOT NULL,
    snippet TEXT NOT NULL,
    username TEXT NOT NULL,
    read INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX messages_read ON messages (read);
CREATE INDEX messages_dateDirectory ON messages (dateDirectory);
CREATE INDEX messages_headers ON messages
    (fromJSON, toJSON, ccJSON, bccJSON, replyToJSON, subject, messageId, read);
CREATE INDEX messages_attachments ON messages (attachments) WHERE attachments > 0;
CREATE INDEX messages_inline ON messages (inline) WHERE inline > 0;
CREATE TABLE tags (
    name TEXT NOT NULL COLLATE NOCASE,
    messageRowid INTEGER NOT NULL,
    PRIMARY KEY (name, messageRowid)
) WITHOUT ROWID;
CREATE INDEX tags_message ON tags (messageRowid);
CREATE VIRTUAL TABLE fulltext USING fts5 (body, tokenize = 'unicode61 remove_diacritics 2');
CREATE TABLE skipped (id TEXT PRIMARY KEY, dateDirectory TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE counts (total INTEGER NOT NULL, unread INTEGER NOT NULL);
INSERT INTO counts VALUES (0, 0);
CREATE TRIGGER messages_deleted AFTER DELETE ON messages BEGIN
    UPDATE counts SET total = total - 1, unread = unread - (OLD.read = 0);
    DELETE FROM tags WHERE messageRowid = OLD.rowid;
    DELETE FROM fulltext WHERE rowid = OLD.rowid;
END;
CREATE TRIGGER messages_read AFTER UPDATE OF read ON messages WHEN OLD.read != NEW.read BEGIN
    UPDATE counts SET unread = unread + (NEW.read = 0) - (OLD.read = 0);
END;
"""

_SUMMARY_COLUMNS = (
    "m.rowid, m.id, m.messageId, m.read, m.fromJSON, m.toJSON, m.ccJSON, m.bccJSON, "
    "m.replyToJSON, m.subject, m.received, m.username, m.size, m.attachments, m.snippet"
)


_INSERT = (
    "INSERT INTO messages (rowid, id, dateDirectory, received, date, sender, recipients, local, "
    "fromJSON, toJSON, ccJSON, bccJSON, replyToJSON, subject, messageId, size, attachments, "
    "inline, attachmentNames, snippet, username) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class IndexCorrupt(Exception):
    """
    The database cannot be used (not a database, damaged, another schema):
    it is to be rebuilt.
    """


def isoTime(seconds: float) -> str:
    """
    Seconds since the epoch as Mailpit's JSON times: UTC, milliseconds,
    C{Z}.
    """
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def removeDatabase(path: str) -> None:
    """
    Delete the database and its WAL and shared-memory files.
    """
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _marks(count: int) -> str:
    return ",".join("?" * count)


class IndexDatabase:
    """
    One connection to the index.

    @ivar path: the database file.
    """

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(
        cls, path: str, create: bool = True, check: bool = False, cacheKiB: int | None = None
    ) -> IndexDatabase:
        """
        Open (and with C{create}, make) the index.

        @param check: run SQLite's C{quick_check} (at start-up).
        @param cacheKiB: SQLite's page cache for this connection (default:
            SQLite's, 2 MiB).
        @raise IndexCorrupt: when the file is not an index of this schema,
            or is damaged.
        @raise FileNotFoundError: when it does not exist and not C{create}.
        """
        exists = os.path.exists(path)
        if not exists and not create:
            raise FileNotFoundError(path)
        try:
            connection = sqlite3.connect(
                path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise IndexCorrupt(f"{path}: {e}") from None
        database = cls(connection, path)
        try:
            connection.execute("PRAGMA busy_timeout = 10000")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA temp_store = MEMORY")
            connection.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
            if cacheKiB is not None:
                connection.execute(f"PRAGMA cache_size = -{int(cacheKiB)}")
            if not exists or database._isEmpty():
                if create:
                    database._create()
            version = database._version()
            if version != SCHEMA_VERSION:
                raise IndexCorrupt(f"{path}: schema {version!r}, expected {SCHEMA_VERSION}")
            if check:
                result = connection.execute("PRAGMA quick_check").fetchone()
                if not result or result[0] != "ok":
                    raise IndexCorrupt(f"{path}: {result[0] if result else 'quick_check failed'}")
        except sqlite3.Error as e:
            connection.close()
            raise IndexCorrupt(f"{path}: {e}") from None
        except IndexCorrupt:
            connection.close()
            raise
        return database

    def _isEmpty(self) -> bool:
        row = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return not row[0]

    def _create(self) -> None:
        self._db.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
        self._db.execute(
            "INSERT INTO meta VALUES ('schema', ?)",
            (str(SCHEMA_VERSION),),
        )

    def pragma(self, name: str) -> Any:
        """
        The value of SQLite's C{PRAGMA name} on this connection.
        """
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        row = self._db.execute(f"PRAGMA {name}").fetchone()
        return None if row is None else row[0]

    def _version(self) -> int | None:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.Error:
            return None
        try:
            return int(row[0]) if row else None
        except ValueError:
            return None

    def close(self) -> None:
        """
        Close the connection.
        """
        self._db.close()

    # -- writing new messages (the index worker) -----------------------------

    def insert(self, records: Sequence[IndexRecord]) -> list[str]:
        """
        Add messages (those already indexed are left alone), in one
        transaction.  A message's rowid is its received time in
        microseconds (the next free one if taken), so rowid order is
        received order, however the messages come in (a rebuild indexes
        the newest first).

        @return: the ids added.
        """
        added: list[str] = []
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            known: set[str] = set()
            for chunk in _chunks([r.id for r in records]):
                known.update(
                    row[0]
                    for row in db.execute(
                        f"SELECT id FROM messages WHERE id IN ({_marks(len(chunk))})", chunk
                    )
                )
            for r in records:
                if r.id in known:
                    continue
                known.add(r.id)
                rowid = int(r.received * 1_000_000)
                values = (
                    r.id,
                    r.dateDirectory,
                    r.received,
                    r.date,
                    r.sender,
                    encodeJSON(r.recipients),
                    int(r.local),
                    r.fromJSON,
                    r.toJSON,
                    r.ccJSON,
                    r.bccJSON,
                    r.replyToJSON,
                    r.subject,
                    r.messageId,
                    r.size,
                    r.attachments,
                    r.inline,
                    r.attachmentNames,
                    r.snippet,
                    r.username,
                )
                while True:
                    try:
                        db.execute(_INSERT, (rowid, *values))
                        break
                    except sqlite3.IntegrityError:
                        rowid += 1
                db.execute(
                    "INSERT INTO fulltext (rowid, body) VALUES (?, ?)", (rowid, r.searchText)
                )
                for tag in r.tags:
                    db.execute("INSERT OR IGNORE INTO tags VALUES (?, ?)", (tag, rowid))
                added.append(r.id)
            if added:
                # Once per batch, not a trigger per row (a tenth of the
                # worker's CPU); new rows are unread.
                db.execute(
                    "UPDATE counts SET total = total + ?, unread = unread + ?",
                    (len(added), len(added)),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return added

    def skip(self, entries: Sequence[tuple[str, str]]) -> None:
        """
        Remember messages that are in the spool but not to be indexed
        (C{(id, dateDirectory)}), so start-up does not read them again.
        """
        if entries:
            with self._transaction():
                self._db.executemany("INSERT OR IGNORE INTO skipped VALUES (?, ?)", entries)

    def known(self) -> dict[str, str]:
        """
        Every message the index has seen (indexed or skipped): id ->
        date directory.
        """
        found = dict(self._db.execute("SELECT id, dateDirectory FROM messages"))
        found.update(self._db.execute("SELECT id, dateDirectory FROM skipped"))
        return found

    def forget(self, ids: Sequence[str]) -> None:
        """
        Drop messages from the index and from the skipped list (they left
        the spool).
        """
        with self._transaction():
            for chunk in _chunks(list(ids)):
                self._db.execute(f"DELETE FROM messages WHERE id IN ({_marks(len(chunk))})", chunk)
                self._db.execute(f"DELETE FROM skipped WHERE id IN ({_marks(len(chunk))})", chunk)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # -- reading ---------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """
        C{(total, unread)} messages.
        """
        total, unread = self._db.execute("SELECT total, unread FROM counts").fetchone()
        return int(total), int(unread)

    def tagNames(self) -> list[str]:
        """
        Every tag in use, sorted (case-insensitively).
        """
        return [
            row[0]
            for row in self._db.execute(
                "SELECT name FROM tags GROUP BY name ORDER BY name COLLATE NOCASE"
            )
        ]

    def tagCounts(self) -> dict[str, int]:
        """
        Tag -> messages carrying it.
        """
        return {
            name: count
            for name, count in self._db.execute(
                "SELECT name, count(*) FROM tags GROUP BY name ORDER BY name COLLATE NOCASE"
            )
        }

    def search(
        self,
        query: SearchQuery,
        start: int = 0,
        limit: int = 50,
        before: float | None = None,
    ) -> list[dict[str, Any]]:
        """
        Message summaries matching C{query}, newest first, in Mailpit's
        C{MessageSummary} shape.

        @param before: only messages received before this time (keyset
            paging).
        """
        source, conditions, parameters, rowid = query.source()
        if before is not None:
            conditions.append(f"{rowid} < ?")
            parameters.append(int(before * 1_000_000))
        where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
        rows = self._db.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM {source} {where} "
            f"ORDER BY {rowid} DESC LIMIT ? OFFSET ?",
            parameters + [limit, start],
        ).fetchall()
        tags = self._tagsOf([row[0] for row in rows])
        return [_summary(row, tags.get(row[0], [])) for row in rows]

    def count(self, query: SearchQuery, before: float | None = None) -> tuple[int, int]:
        """
        C{(matching, unread matching)} for C{query}.
        """
        source, conditions, parameters, rowid = query.source()
        if not conditions and before is None:
            return self.counts()
        if query.onlyWords():
            return self._countWords(query, before)
        if before is not None:
            conditions.append(f"{rowid} < ?")
            parameters.append(int(before * 1_000_000))
        row = self._db.execute(
            f"SELECT count(*), total(m.read = 0) FROM {source} WHERE {' AND '.join(conditions)}",
            parameters,
        ).fetchone()
        return int(row[0]), int(row[1])

    def _countWords(self, query: SearchQuery, before: float | None) -> tuple[int, int]:
        """
        L{count} of a query of words (and received times) only: FTS5
        counts its matches without joining the messages (a lookup per
        match), and the unread ones are found by looking each match up in
        the set of read messages or of unread ones, whichever is smaller,
        built once from the index on C{read}.
        """
        _, conditions, parameters, _ = query.source()
        if before is not None:
            conditions.append("fulltext.rowid < ?")
            parameters.append(int(before * 1_000_000))
        where = " AND ".join(conditions)
        total, unread = self.counts()
        if unread == total or not unread:
            cursor = self._db.execute(f"SELECT count(*) FROM fulltext WHERE {where}", parameters)
            matching = int(cursor.fetchone()[0])
            return matching, (matching if unread else 0)
        countRead = total - unread <= unread
        # One pass over the matches for both counts.  The + keeps FTS5
        # from being asked for each rowid of the set in turn (each a full
        # evaluation of the query).
        row = self._db.execute(
            "SELECT count(*), total(+fulltext.rowid IN (SELECT rowid FROM messages WHERE read = ?)) "
            f"FROM fulltext WHERE {where}",
            [int(countRead), *parameters],
        ).fetchone()
        matching, among = int(row[0]), int(row[1])
        return matching, (matching - among if countRead else among)

    def page(
        self,
        query: SearchQuery,
        start: int = 0,
        limit: int = 50,
        before: float | None = None,
    ) -> tuple[list[dict[str, Any]], int, int]:
        """
        L{search} and L{count} at once: C{(summaries, matching, unread
        matching)}.

        A query with conditions on the messages (C{subject:}, C{from:},
        C{is:unread} beside words, a word excluded) is run once, for its
        counts and the rowid of every match, the page's taken from those:
        what scans the table or joins every word match to it does so once,
        not once for the page and again for the counts.
        Words alone are counted by FTS5 (L{count}); no condition at all, or
        a read state alone, by the counts and the index on C{read}.
        """
        if query.matchExpression() is not None:
            onePass = not query.onlyWords()
        else:
            onePass = bool(query.conditions or query.exclude)
        if not onePass:
            return (
                self.search(query, start, limit, before),
                *self.count(query, before),
            )
        if query.matchExpression() is None and query.exclude and query.isFiltered():
            return self._pageExcluding(query, start, limit, before)
        source, conditions, parameters, rowid = query.source()
        if before is not None:
            conditions.append(f"{rowid} < ?")
            parameters.append(int(before * 1_000_000))
        # One row: the counts and every matching rowid.  Not a row per
        # match (a Python tuple each, sorted here: twice the time of the
        # scan with 100,000 matches), and not sorted by SQLite: with an
        # C{ORDER BY}, SQLite walks the table in rowid order rather than
        # scan a narrower index (of the headers, of the messages with
        # attachments) and sort what it finds.
        matching, unread, listed = self._db.execute(
            f"SELECT count(*), total(m.read = 0), group_concat({rowid}) FROM {source} "
            f"WHERE {' AND '.join(conditions)}",
            parameters,
        ).fetchone()
        found = map(int, listed.split(",")) if listed else iter(())
        rowids = heapq.nlargest(start + limit, found)[start:]
        return self._summariesOf(rowids), int(matching), int(unread)

    def _pageExcluding(
        self, query: SearchQuery, start: int, limit: int, before: float | None
    ) -> tuple[list[dict[str, Any]], int, int]:
        """
        L{page} of conditions on the messages with words excluded
        (C{to:a@b -newsletter}): the messages the conditions find first,
        then those of them that have the words, found by FTS5 (its matches
        looked up in that set), are taken out.  A C{NOT IN} would list
        every message with the words, most of the mailbox for a common
        word.
        """
        source, conditions, parameters, rowid = replace(query, exclude=[]).source()
        if before is not None:
            conditions.append(f"{rowid} < ?")
            parameters.append(int(before * 1_000_000))
        listed, unreadListed = self._db.execute(
            "SELECT group_concat(m.rowid), group_concat(CASE WHEN m.read = 0 THEN m.rowid END) "
            f"FROM {source} WHERE {' AND '.join(conditions)}",
            parameters,
        ).fetchone()
        candidates = [int(r) for r in listed.split(",")] if listed else []
        excluded: set[int] = set()
        if candidates:
            (found,) = self._db.execute(
                "SELECT group_concat(rowid) FROM fulltext WHERE fulltext MATCH ? AND "
                "+rowid IN (SELECT value FROM json_each(?))",
                (" OR ".join(query.exclude), json.dumps(candidates)),
            ).fetchone()
            excluded = {int(r) for r in found.split(",")} if found else set()
        kept = [r for r in candidates if r not in excluded]
        unreadKept = sum(
            1 for r in (unreadListed.split(",") if unreadListed else ()) if int(r) not in excluded
        )
        rowids = heapq.nlargest(start + limit, kept)[start:]
        return self._summariesOf(rowids), len(kept), unreadKept

    def _summariesOf(self, rowids: Sequence[int]) -> list[dict[str, Any]]:
        """
        The summaries of messages, in the order of C{rowids}.
        """
        rows: dict[int, Sequence[Any]] = {}
        for chunk in _chunks(rowids):
            for row in self._db.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM messages m "
                f"WHERE m.rowid IN ({_marks(len(chunk))})",
                chunk,
            ):
                rows[row[0]] = row
        tags = self._tagsOf(rowids)
        return [_summary(rows[r], tags.get(r, [])) for r in rowids if r in rows]

    def idsMatching(self, query: SearchQuery) -> list[str]:
        """
        The ids of every message matching C{query}.
        """
        source, conditions, parameters, _ = query.source()
        where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
        return [
            row[0] for row in self._db.execute(f"SELECT m.id FROM {source} {where}", parameters)
        ]

    def _tagsOf(self, rowids: Sequence[int]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {}
        for chunk in _chunks(list(rowids)):
            for rowid, name in self._db.execute(
                f"SELECT messageRowid, name FROM tags WHERE messageRowid IN ({_marks(len(chunk))}) "
                "ORDER BY name COLLATE NOCASE",
                chunk,
            ):
                found.setdefault(rowid, []).append(name)
        return found

    def latestId(self) -> str | None:
        """
        The id of the newest message, or L{None} when there is none.
        """
        row = self._db.execute("SELECT id FROM messages ORDER BY rowid DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def message(self, id: str) -> dict[str, Any] | None:
        """
        One message's indexed facts (every column, C{Tags} and a
        C{summary}), or L{None}.
        """
        cursor = self._db.execute("SELECT * FROM messages WHERE id = ?", (id,))
        row = cursor.fetchone()
        if row is None:
            return None
        record = dict(zip([d[0] for d in cursor.description], row))
        record["tags"] = self._tagsOf([record["rowid"]]).get(record["rowid"], [])
        summaryRow = self._db.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM messages m WHERE m.rowid = ?", (record["rowid"],)
        ).fetchone()
        record["summary"] = _summary(summaryRow, record["tags"])
        return record

    def locations(self, ids: Sequence[str]) -> list[tuple[str, str]]:
        """
        C{(id, dateDirectory)} of those of C{ids} that are indexed.
        """
        found: list[tuple[str, str]] = []
        for chunk in _chunks(list(ids)):
            found.extend(
                self._db.execute(
                    f"SELECT id, dateDirectory FROM messages WHERE id IN ({_marks(len(chunk))})",
                    chunk,
                )
            )
        return found

    def oldest(self, count: int) -> list[tuple[str, str]]:
        """
        C{(id, dateDirectory)} of the C{count} oldest messages.
        """
        return list(
            self._db.execute(
                "SELECT id, dateDirectory FROM messages ORDER BY rowid LIMIT ?",
                (count,),
            )
        )

    def receivedBefore(self, when: float, limit: int) -> list[tuple[str, str]]:
        """
        C{(id, dateDirectory)} of up to C{limit} messages received before
        C{when}, oldest first.
        """
        return list(
            self._db.execute(
                "SELECT id, dateDirectory FROM messages WHERE rowid < ? ORDER BY rowid LIMIT ?",
                (int(when * 1_000_000), limit),
            )
        )

    # -- changing (the server) -------------------------------------------

    def setRead(self, ids: Sequence[str] | None, read: bool) -> list[str]:
        """
        Mark messages read or unread (C{ids=None}: all of them).

        @return: the ids whose state changed.
        """
        value = int(read)
        changed: list[str] = []
        with self._transaction():
            if ids is None:
                changed = [
                    row[0]
                    for row in self._db.execute("SELECT id FROM messages WHERE read != ?", (value,))
                ]
                self._db.execute("UPDATE messages SET read = ? WHERE read != ?", (value, value))
                return changed
            for chunk in _chunks(list(ids)):
                marks = _marks(len(chunk))
                changed.extend(
                    row[0]
                    for row in self._db.execute(
                        f"SELECT id FROM messages WHERE read != ? AND id IN ({marks})",
                        [value, *chunk],
                    )
                )
                self._db.execute(
                    f"UPDATE messages SET read = ? WHERE read != ? AND id IN ({marks})",
                    [value, value, *chunk],
                )
        return changed

    def setTags(self, ids: Sequence[str], tags: Sequence[str]) -> None:
        """
        Replace the tags of messages.
        """
        with self._transaction():
            for id in ids:
                row = self._db.execute("SELECT rowid FROM messages WHERE id = ?", (id,)).fetchone()
                if row is None:
                    continue
                self._db.execute("DELETE FROM tags WHERE messageRowid = ?", (row[0],))
                self._db.executemany(
                    "INSERT OR IGNORE INTO tags VALUES (?, ?)", [(t, row[0]) for t in tags]
                )

    def renameTag(self, old: str, new: str) -> None:
        """
        Rename a tag on every message (merging with C{new} where both are).
        """
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO tags SELECT ?, messageRowid FROM tags WHERE name = ?",
                (new, old),
            )
            if old.lower() != new.lower():
                self._db.execute("DELETE FROM tags WHERE name = ?", (old,))
            else:
                self._db.execute("UPDATE tags SET name = ? WHERE name = ?", (new, old))

    def deleteTag(self, name: str) -> None:
        """
        Remove a tag from every message.
        """
        with self._transaction():
            self._db.execute("DELETE FROM tags WHERE name = ?", (name,))

    def delete(self, ids: Sequence[str]) -> None:
        """
        Remove messages from the index (their files are the caller's).
        """
        with self._transaction():
            for chunk in _chunks(list(ids)):
                self._db.execute(f"DELETE FROM messages WHERE id IN ({_marks(len(chunk))})", chunk)

    def hide(self, entries: Sequence[tuple[str, str]]) -> None:
        """
        Remove messages from the index but remember them as skipped: their
        files stay (still queued for a remote recipient), and start-up
        must not index them again.
        """
        with self._transaction():
            for chunk in _chunks([e[0] for e in entries]):
                self._db.execute(f"DELETE FROM messages WHERE id IN ({_marks(len(chunk))})", chunk)
            self._db.executemany("INSERT OR IGNORE INTO skipped VALUES (?, ?)", entries)


class _Transaction:
    """
    C{BEGIN IMMEDIATE} ... C{COMMIT}, or C{ROLLBACK} on an exception.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def _addresses(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return []


def _summary(row: Sequence[Any], tags: list[str]) -> dict[str, Any]:
    (
        _rowid,
        id,
        messageId,
        read,
        fromJSON,
        toJSON,
        ccJSON,
        bccJSON,
        replyToJSON,
        subject,
        received,
        username,
        size,
        attachments,
        snippet,
    ) = row
    summary = {
        "ID": id,
        "MessageID": messageId,
        "Read": bool(read),
        "From": _addresses(fromJSON),
        "To": _addresses(toJSON),
        "Cc": _addresses(ccJSON),
        "Bcc": _addresses(bccJSON),
        "ReplyTo": _addresses(replyToJSON),
        "Subject": subject,
        "Created": isoTime(received),
        "Username": username,
        "Tags": tags,
        "Size": size,
        "Attachments": attachments,
        "Snippet": snippet,
    }
    return summary
