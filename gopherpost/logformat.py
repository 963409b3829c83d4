# -*- test-case-name: tests.test_logformat -*-
"""
Log events as twistd's text lines, formatted for less CPU.

Every accepted message logs a line, every relayed one several, every
webhook attempt one: hundreds a second under load.
L{twisted.logger.formatEventAsClassicLogText} formats each one with
C{string.Formatter} (pure Python, the format parsed again for every event)
and its time stamp with C{strftime}.  L{formatClassic} gives the same line
with C{str.format_map} when the event's format only names fields (no
C{()} calls, no positional or nested fields; each format checked once),
and falls back to Twisted's function for everything else: a traceback, a
flattened event, a format that does not apply.  L{CachedTimeFormat} keeps
the time stamp's text for the second it names.
"""

from __future__ import annotations

from collections.abc import Callable
from string import Formatter
from typing import Any

from twisted.logger import formatEventAsClassicLogText, formatTime, timeFormatRFC3339

__all__ = ["CachedTimeFormat", "formatClassic"]

#: Formats seen, and whether L{formatClassic} may use C{format_map}.
_simpleFormats: dict[str, bool] = {}
_MAX_FORMATS = 2048


def _isSimple(logFormat: str) -> bool:
    known = _simpleFormats.get(logFormat)
    if known is None:
        try:
            known = all(
                name.isidentifier() and "{" not in (spec or "")
                for _, name, spec, _ in Formatter().parse(logFormat)
                if name is not None
            )
        except ValueError:
            known = False
        if len(_simpleFormats) < _MAX_FORMATS:
            _simpleFormats[logFormat] = known
    return known


def formatClassic(
    event: dict[str, Any], formatTime: Callable[[float | None], str] = formatTime
) -> str | None:
    """
    What L{twisted.logger.formatEventAsClassicLogText} returns for
    C{event}: C{"<time> [<system>] <text>\\n"}, or L{None} for an event
    without text.
    """
    logFormat = event.get("log_format")
    if (
        type(logFormat) is not str
        or "log_failure" in event
        or "log_flattened" in event
        or not _isSimple(logFormat)
    ):
        return formatEventAsClassicLogText(event, formatTime=formatTime)
    try:
        text = logFormat.format_map(event)
    except Exception:
        # A field the event lacks, a value its spec does not fit: Twisted
        # says so in the line.
        return formatEventAsClassicLogText(event, formatTime=formatTime)
    if not text:
        return None
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
    else:
        try:
            system = str(system)
        except Exception:
            system = "UNFORMATTABLE"
    line = f"{formatTime(event.get('log_time'))} [{system}] {text}"
    return line.replace("\n", "\n\t") + "\n"


class CachedTimeFormat:
    """
    L{twisted.logger.formatTime} with a format of whole seconds, its text
    kept for the second it names.
    """

    def __init__(self, timeFormat: str = timeFormatRFC3339) -> None:
        self._timeFormat = timeFormat
        self._second: int | None = None
        self._stamp = ""

    def __call__(self, when: float | None) -> str:
        if when is None:
            return formatTime(when, self._timeFormat)
        second = int(when // 1)
        if second != self._second:
            self._stamp = formatTime(second, self._timeFormat)
            self._second = second
        return self._stamp
