"""
Tests for L{gopherpost.logformat}: the lines of
L{twisted.logger.formatEventAsClassicLogText}, on whichever Twisted runs.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import LogLevel, formatEventAsClassicLogText, formatTime
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gopherpost import logformat
from gopherpost.logformat import CachedTimeFormat, formatClassic

_WHEN = 1764583200.25


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")

    __repr__ = __str__


def _failure() -> Failure:
    try:
        raise ZeroDivisionError("for the traceback")
    except ZeroDivisionError:
        return Failure()
    raise AssertionError("unreachable")


def _events() -> list[dict[str, Any]]:
    base = dict(log_time=_WHEN, log_level=LogLevel.info, log_namespace="gopherpost.test")
    return [
        dict(
            base,
            log_format="Accepted {queueId} from {client} size={size}",
            queueId="Q1",
            client="127.0.0.1",
            size=1024,
        ),
        dict(
            base,
            log_format="delay={delay:.3f} error={error!r} s={s!s}",
            delay=0.1234,
            error='it\'s "quoted"',
            s=b"bytes",
        ),
        dict(base, log_format="no fields at all"),
        dict(base, log_format="two\nlines {x}", x="and\nmore"),
        dict(base, log_format="{{literal braces}} {x}", x=1),
        dict(base, log_format="missing {absent}"),
        dict(base, log_format="positional {}"),
        dict(base, log_format="indexed {0}"),
        dict(base, log_format="attribute {x.real}", x=3),
        dict(base, log_format="call {f()}", f=lambda: "called"),
        dict(base, log_format="nested {x:{width}}", x=5, width=4),
        dict(base, log_format="bad spec {x:d}", x="text"),
        dict(base, log_format="broken {"),
        dict(base, log_format="unprintable {x}", x=_Unprintable()),
        dict(base, log_format=""),
        dict(base, log_format=None),
        dict(base),
        dict(base, log_format=b"bytes format {x}", x=1),
        dict(base, log_format="system {x}", x=1, log_system="custom-system"),
        dict(base, log_format="system {x}", x=1, log_system=_Unprintable()),
        dict(log_format="no level, no namespace, no time {x}", x=1),
        dict(base, log_format="level only {x}", x=1, log_namespace=None),
        dict(base, log_format="with a traceback {x}", x=1, log_failure=_failure()),
        dict(base, log_format="warn {x}", x=1, log_level=LogLevel.warn),
    ]


class FormatClassicTests(SynchronousTestCase):
    """
    L{formatClassic} writes what Twisted's function writes.
    """

    def test_sameLines(self) -> None:
        """
        Every kind of event gives Twisted's line (or L{None}), with
        Twisted's time format and with L{CachedTimeFormat}.
        """
        for event in _events():
            for timeFormatter in (formatTime, CachedTimeFormat()):
                expected = formatEventAsClassicLogText(dict(event), formatTime=timeFormatter)
                line = formatClassic(dict(event), timeFormatter)
                if expected is not None and "Unable to format event" in expected:
                    # Twisted's traceback of the failed formatting shows its
                    # callers, which differ.
                    assert line is not None
                    expected, line = expected.splitlines()[0], line.splitlines()[0]
                self.assertEqual(line, expected, event.get("log_format"))

    def test_fastPath(self) -> None:
        """
        A format of named fields does not go through Twisted's function;
        one with a call does.
        """
        calls: list[object] = []
        real = logformat.formatEventAsClassicLogText

        def recording(event: dict[str, Any], formatTime: Any) -> str | None:
            calls.append(event["log_format"])
            return real(event, formatTime=formatTime)

        self.patch(logformat, "formatEventAsClassicLogText", recording)
        events = _events()
        formatClassic(events[0])
        formatClassic(events[1])
        self.assertEqual(calls, [])
        formatClassic(events[9])
        self.assertEqual(calls, ["call {f()}"])


class CachedTimeFormatTests(SynchronousTestCase):
    """
    L{CachedTimeFormat} is L{formatTime} for whole seconds.
    """

    def test_sameText(self) -> None:
        cached = CachedTimeFormat()
        for when in (_WHEN, _WHEN + 0.5, _WHEN + 0.99, _WHEN + 1, _WHEN - 3600.5, None):
            self.assertEqual(cached(when), formatTime(when))
