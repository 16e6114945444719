"""The template's HTML rewritten into the few tags Telegram's `parse_mode: HTML` accepts."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser

URL = re.compile(r"^(https?|tg)://\S+$", re.IGNORECASE)  # what Telegram takes as a link
_ALLOWED = {
    "b": "b",
    "strong": "b",
    "i": "i",
    "em": "i",
    "u": "u",
    "ins": "u",
    "s": "s",
    "strike": "s",
    "del": "s",
    "code": "code",
    "pre": "pre",
    "a": "a",
    "blockquote": "blockquote",
    "tg-spoiler": "tg-spoiler",
    **{f"h{n}": "b" for n in range(1, 7)},
}
_PARAGRAPH = {"p", "ul", "ol", "table", "blockquote", "pre", "dl", "section", "article", "header", "footer"}
_PARAGRAPH |= {f"h{n}" for n in range(1, 7)}
_LINE = {"div", "tr", "li", "dt", "dd", "hr", "address", "figure", "figcaption", "center", "main", "nav"}
_LINE |= {"aside", "caption", "form", "fieldset", "details", "summary", "thead", "tbody", "tfoot"}
_HIDDEN = {"script", "style", "head", "title", "template", "noscript", "svg"}
_VOID = {"br", "img", "hr", "meta", "link", "input", "wbr", "col", "source", "area", "base", "embed"}
_VOID |= {"param", "track"}


@dataclass
class _Element:
    tag: str
    emitted: str | None = None  # the Telegram tag written for it, if any
    counter: int = 0  # items so far, for <ol>


class _TelegramHtml(HTMLParser):
    """Rewrites HTML into Telegram's subset: the allowed tags, text, and newlines for blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[_Element] = []
        self.started = False  # something visible was written
        self.breaks = 0  # newlines owed before the next thing written
        self.space = False  # a collapsed space owed before the next text
        self.at_space = True  # the last visible character written is a space or a newline
        self.after_bullet = False  # a list item's bullet was just written: no break before its text

    # writing
    def _flush(self) -> None:
        if self.started and self.breaks:
            self.out.append("\n" * self.breaks)
            self.at_space = True
        elif self.started and self.space and not self.at_space:
            self.out.append(" ")
            self.at_space = True
        self.breaks, self.space = 0, False

    def _write(self, text: str) -> None:
        self._flush()
        self.out.append(text)
        self.started = True
        self.at_space = text.endswith((" ", "\n"))
        self.after_bullet = False

    def _break(self, count: int) -> None:
        if self.started and not self.after_bullet:
            self.breaks = max(self.breaks, count)
            self.space = False

    def _inside(self, *tags: str) -> bool:
        return any(element.emitted in tags for element in self.stack)

    # the parser's callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Open an element: write its Telegram tag, or start its block."""
        if self._inside_hidden() or tag in _HIDDEN:
            if tag not in _VOID:
                self.stack.append(_Element(tag))
            return
        if tag == "br":
            if self.started and not self.after_bullet:
                self.breaks = min(self.breaks + 1, 2)
                self.space = False
            return
        if tag in _VOID:
            if tag == "hr":
                self._break(2)
            return
        element = _Element(tag)
        if tag in _PARAGRAPH:
            self._break(1 if self._in_list() else 2)
        elif tag in _LINE:
            self._break(1)
        opening = self._opening(tag, dict(attrs))
        self.stack.append(element)
        if tag == "li":
            self._bullet()
        if opening:
            element.emitted = opening.split()[0].strip("<>")
            self._flush()
            self.out.append(opening)

    def _opening(self, tag: str, attrs: dict[str, str | None]) -> str | None:
        """The Telegram tag to write for an element, or None to keep only its text."""
        if self._inside("pre", "code"):
            if tag == "code" and self.stack and self.stack[-1].emitted == "pre":
                language = (attrs.get("class") or "").strip()
                if re.fullmatch(r"language-[A-Za-z0-9_+#.-]+", language):
                    return f'<code class="{language}">'
                return "<code>"
            return None
        if tag == "span" and "tg-spoiler" in (attrs.get("class") or "").split():
            return "<tg-spoiler>"
        name = _ALLOWED.get(tag)
        if name is None or (name in ("a", "blockquote") and self._inside(name)):
            return None
        if name == "a":
            href = (attrs.get("href") or "").strip()
            if not URL.match(href):
                return None
            return f'<a href="{html.escape(href, quote=True)}">'
        return f"<{name}>"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """`<br/>`: the same as `<br>`."""
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and self.stack and self.stack[-1].tag == tag:
            self._close(self.stack.pop())

    def handle_endtag(self, tag: str) -> None:
        """Close the element and any left open inside it."""
        if tag in _VOID or not any(element.tag == tag for element in self.stack):
            return
        while self.stack:
            element = self.stack.pop()
            self._close(element)
            if element.tag == tag:
                break

    def _close(self, element: _Element) -> None:
        if element.tag in _HIDDEN or self._inside_hidden():
            return
        if element.emitted:
            self.out.append(f"</{element.emitted}>")
        if element.tag in _PARAGRAPH:
            self._break(1 if self._in_list() else 2)
        elif element.tag in _LINE:
            self._break(1)
        elif element.tag in ("td", "th"):
            self.space = True

    def handle_data(self, data: str) -> None:
        """Text: escaped for Telegram; whitespace collapsed as a browser would, except in <pre>."""
        if self._inside_hidden():
            return
        if self._inside("pre"):
            if data:
                self._write(html.escape(data, quote=False))
            return
        collapsed = re.sub(r"\s+", " ", data)
        if not collapsed.strip():
            if collapsed:
                self.space = True
            return
        if collapsed.startswith(" "):
            self.space = True
        self._write(html.escape(collapsed.strip(), quote=False))
        self.space = collapsed.endswith(" ")

    # lists
    def _in_list(self) -> bool:
        return any(element.tag in ("ul", "ol") for element in self.stack)

    def _bullet(self) -> None:
        lists = [element for element in self.stack if element.tag in ("ul", "ol")]
        if not lists:
            self._write("• ")
            self.after_bullet = True
            return
        current = lists[-1]
        current.counter += 1
        indent = "  " * (len(lists) - 1)
        self._write(indent + (f"{current.counter}. " if current.tag == "ol" else "• "))
        self.after_bullet = True

    def _inside_hidden(self) -> bool:
        return any(element.tag in _HIDDEN for element in self.stack)

    def result(self) -> str:
        """The converted text, every tag closed."""
        self.close()
        while self.stack:
            self._close(self.stack.pop())
        return "".join(self.out)


def telegram_html(source: str) -> str:
    """Convert a template's HTML into what `sendMessage` accepts with `parse_mode: HTML`.

    Telegram allows only b/strong, i/em, u/ins, s/strike/del, a href, code, pre, blockquote
    and spoilers, and only the entities `&lt; &gt; &amp; &quot;` and numeric ones. Paragraphs
    and headings become blank-line separated (headings bold), `<br>` and `<div>` newlines,
    list items `• ` or `1. ` lines; images, scripts and styles go; other tags keep their text.
    """
    parser = _TelegramHtml()
    parser.feed(source)
    return parser.result()


def visible_length(text: str) -> int:
    """How long Telegram counts a text with its tags removed (UTF-16 code units)."""
    plain = html.unescape(re.sub(r"<[^>]*>", "", text))
    return len(plain.encode("utf-16-le")) // 2
