# -*- test-case-name: tests.test_webui_sanitize -*-
"""
HTML mail made safe to look at: bleach (python3-bleach in Debian, bleach on
PyPI; the same API on both: 5.0 and 6.x), an allow-list of tags,
attributes, URL schemes and CSS properties.

bleach is Mozilla's html5lib-based sanitizer: it parses as a browser
does, so the markup a browser would see is the markup that is checked.
It is the sanitizer Debian ships (nh3 is not packaged for bookworm) and it
is maintained for security fixes.  Sanitizing is one layer: the result is
shown in an iframe sandboxed without scripts and without our origin, under
a Content-Security-Policy that allows no script and (until asked) no
remote image (see L{gopherpost.webui.views}).

What it does besides the allow-list:
  - the content of C{script}, C{title}, C{template} and C{iframe}
    elements is removed, not shown as text;
  - every link opens in a new tab with C{rel="noopener noreferrer"};
  - C{cid:} images point at the message's parts in the API;
  - remote images (C{http:}, C{https:}, protocol-relative) lose their
    C{src} unless remote images are allowed; C{data:} is allowed for images
    only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import bleach
from bleach.css_sanitizer import ALLOWED_CSS_PROPERTIES, CSSSanitizer
from bleach.html5lib_shim import Filter

__all__ = ["sanitizeHTML", "countRemoteImages", "ALLOWED_TAGS"]

ALLOWED_TAGS = frozenset(
    """a abbr acronym address article aside b bdi bdo big blockquote br caption center cite code
    col colgroup dd del details dfn div dl dt em figcaption figure font footer h1 h2 h3 h4 h5 h6
    header hr i img ins kbd li main mark nav ol p pre q s samp section small span strike strong
    style sub summary sup table tbody td tfoot th thead time tr tt u ul var wbr""".split()
)

_GLOBAL_ATTRIBUTES = frozenset(
    """align valign width height bgcolor color border dir lang title style class id
    cellpadding cellspacing colspan rowspan face size nowrap""".split()
)
_TAG_ATTRIBUTES: Mapping[str, frozenset[str]] = {
    "a": frozenset({"href", "name", "target", "rel"}),
    "img": frozenset({"src", "alt", "hspace", "vspace"}),
    "ol": frozenset({"start", "type"}),
    "ul": frozenset({"type"}),
    "td": frozenset({"headers", "scope"}),
    "th": frozenset({"headers", "scope", "abbr"}),
    "col": frozenset({"span"}),
    "colgroup": frozenset({"span"}),
    "time": frozenset({"datetime"}),
    "q": frozenset({"cite"}),
    "blockquote": frozenset({"cite"}),
    "del": frozenset({"cite", "datetime"}),
    "ins": frozenset({"cite", "datetime"}),
}

_PROTOCOLS = frozenset({"http", "https", "mailto", "tel", "data"})

_CSS_PROPERTIES = frozenset(ALLOWED_CSS_PROPERTIES) | frozenset(
    """background-color border-collapse border-spacing border-radius border-top border-right
    border-bottom border-left border-width border-style box-sizing line-height list-style-type
    margin margin-top margin-right margin-bottom margin-left max-width min-width max-height
    min-height padding padding-top padding-right padding-bottom padding-left text-align
    text-decoration text-transform vertical-align white-space word-break letter-spacing
    font-style font-variant display table-layout""".split()
) - frozenset({"background", "background-image"})

_REMOVED_WITH_CONTENT = re.compile(
    r"<(script|title|template|iframe)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL
)
_STYLE = re.compile(r"<style>.*?</style>", re.IGNORECASE | re.DOTALL)
_DATA_IMAGE = re.compile(r"^data:image/(png|gif|jpe?g|webp|bmp);", re.IGNORECASE)
_REMOTE = re.compile(r"^\s*(https?:|//)", re.IGNORECASE)
_REMOTE_IMAGE = re.compile(
    r"<img\b[^>]*\bsrc\s*=\s*[\"']?\s*(https?:|//)|url\(\s*[\"']?\s*(https?:|//)", re.IGNORECASE
)


def _allowAttribute(tag: str, name: str, value: str) -> bool:
    if name in _GLOBAL_ATTRIBUTES or name in _TAG_ATTRIBUTES.get(tag, ()):
        lowered = value.strip().lower()
        if name in ("href", "src", "cite") and lowered.startswith("data:"):
            return tag == "img" and name == "src" and bool(_DATA_IMAGE.match(lowered))
        return True
    return False


class _MailFilter(Filter):
    """
    After sanitizing: links open in a new tab without referrer or opener;
    remote images lose their source unless allowed.
    """

    allowRemote = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for token in super().__iter__():
            if token.get("type") in ("StartTag", "EmptyTag"):
                name = token.get("name")
                data = dict(token.get("data") or {})
                if name == "a":
                    data[(None, "target")] = "_blank"
                    data[(None, "rel")] = "noopener noreferrer"
                elif name == "img":
                    src = data.get((None, "src"), "")
                    if src and _REMOTE.match(src) and not self.allowRemote:
                        del data[(None, "src")]
                        data[(None, "data-remote-image")] = "blocked"
                token["data"] = data
            yield token


def _filterClass(allowRemote: bool) -> type:
    return type("_Filter", (_MailFilter,), {"allowRemote": allowRemote})


_CLEANERS: dict[bool, Any] = {}


def _cleaner(allowRemote: bool) -> Any:
    cleaner = _CLEANERS.get(allowRemote)
    if cleaner is None:
        cleaner = bleach.sanitizer.Cleaner(
            tags=sorted(ALLOWED_TAGS) if bleach.__version__.startswith("5.") else ALLOWED_TAGS,
            attributes=_allowAttribute,
            protocols=sorted(_PROTOCOLS) if bleach.__version__.startswith("5.") else _PROTOCOLS,
            strip=True,
            strip_comments=True,
            filters=[_filterClass(allowRemote)],
            css_sanitizer=CSSSanitizer(allowed_css_properties=_CSS_PROPERTIES),
        )
        _CLEANERS[allowRemote] = cleaner
    return cleaner


def countRemoteImages(markup: str) -> int:
    """
    How many remote images (C{<img src="http...">} or CSS C{url(http...)})
    C{markup} has, roughly (for the UI's "load remote images" button).
    """
    return len(_REMOTE_IMAGE.findall(markup))


def sanitizeHTML(
    markup: str,
    allowRemoteImages: bool = False,
    cidURL: Callable[[str], str | None] | None = None,
) -> str:
    """
    Sanitize the HTML body of a message.

    @param allowRemoteImages: keep C{http:}/C{https:} image sources.
    @param cidURL: maps a C{Content-ID} to the URL of that part (L{None}:
        no such part).
    @return: an HTML fragment (the body's content).
    """
    markup = _REMOVED_WITH_CONTENT.sub("", markup)
    if cidURL is not None:

        def replace(match: re.Match[str]) -> str:
            url = cidURL(match.group(2))
            return match.group(1) + (url if url is not None else "")

        markup = re.sub(r"""(=\s*["']?)cid:([^"'\s>]+)""", replace, markup, flags=re.IGNORECASE)
    result: str = _cleaner(allowRemoteImages).clean(markup)
    # bleach escapes ">" in style sheets, which breaks child selectors; ">"
    # cannot open a tag, so it may come back (nothing else does).
    return _STYLE.sub(lambda m: m.group(0).replace("&gt;", ">"), result)
