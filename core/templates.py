"""Message templates: one folder per template, one file per channel and locale.

```
templates/cart_reminder/email.ru.html   front matter: subject (and preheader)
templates/cart_reminder/email.ru.txt    optional text part; derived from the HTML if absent
templates/cart_reminder/sms.ru.txt
templates/cart_reminder/push.ru.txt     front matter: title, url, icon
templates/cart_reminder/telegram.ru.html   front matter: button, url
templates/cart_reminder/whatsapp.ru.txt    front matter: content_sid, variables (approved templates)
templates/cart_reminder/sms.txt         no locale: the locale-neutral version
```

A customer gets the version in their locale, else in `default_locale`, else the one with no
locale in its name, else `en` (`wanted_locales`), else any there is.

Each channel declares its file extensions and front matter keys (`boomerang.kinds.Channel`),
so a channel a plugin adds has templates like the built-in ones.

Front matter is YAML between two `---` lines at the top. Templates are sandboxed Jinja2 with
the same names and functions as scenario expressions; HTML is autoescaped. A message renders
within the budget of the scope under way (see `boomerang.expressions`): every file of it, and
every front matter value, stops at the same deadline.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError
from ruamel.yaml.comments import CommentedMap

from boomerang import expressions
from boomerang.expressions import (
    LazyTemplate,
    Refused,
    Sandbox,
    current_scope,
    evaluating,
    make_environment,
    render,
)
from boomerang.names import (
    NameUse,
    RecommendationCall,
    place,
    placed_call,
    recommendation_calls,
    template_names,
)
from boomerang.problems import Problem, ProblemError, did_you_mean
from boomerang.recommendations import MAX_LIMIT, valid_limit
from boomerang.yamlfile import parse_yaml, value_position

_FILE = re.compile(
    r"^(?P<channel>[a-z][a-z0-9_]*)(?:\.(?P<locale>[a-z]{2}(?:[-_][A-Za-z]{2})?))?\.(?P<ext>html|txt)$"
)
NEUTRAL = ""  # the locale of a file named without one (`sms.txt`)


def wanted_locales(*preferred: str | None) -> list[str | None]:
    """The locales to look for, best first: the preferred ones (the customer's, then
    `default_locale`), then the locale-neutral file, then `en`."""
    return [*preferred, NEUTRAL, "en"]


@dataclass
class Part:
    """One template file: its front matter and body, checked (compiled on first render)."""

    file: Path
    channel: str
    locale: str
    kind: str  # "html" or "txt"
    body: LazyTemplate
    front: dict[str, Any] = field(default_factory=dict)  # values are LazyTemplates or plain data
    names: list[NameUse] = field(default_factory=list)  # top-level names it uses, for `check`
    # its `recommendations(...)` calls, at their lines in the file: fetched before it renders
    recommendations: list[RecommendationCall] = field(default_factory=list)


@dataclass
class Rendered:
    """A template rendered for one customer: what goes into a `Message`."""

    channel: str
    locale: str
    body: str
    subject: str | None = None
    html: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MessageTemplate:
    """All the files of one template, by channel and locale."""

    name: str
    parts: dict[tuple[str, str, str], Part] = field(default_factory=dict)

    def channels(self) -> set[str]:
        """Channels this template has at least one file for."""
        return {channel for channel, _, _ in self.parts}

    def recommendation_limits(self) -> dict[str, int]:
        """The strategies its files' `recommendations()` calls name, each with the largest limit
        asked (`MAX_LIMIT` for one that is not a constant): what to fetch before it renders."""
        limits: dict[str, int] = {}
        for part in self.parts.values():
            for call in part.recommendations:
                if isinstance(call.strategy, str):
                    limit = call.limit if valid_limit(call.limit) else MAX_LIMIT
                    limits[call.strategy] = max(limits.get(call.strategy, 0), limit)
        return limits

    def locales(self, channel: str) -> list[str]:
        """Locales available for a channel, sorted."""
        return sorted({locale for ch, locale, _ in self.parts if ch == channel})

    def pick_locale(self, channel: str, wanted: list[str | None]) -> str | None:
        """The first wanted locale this template has for the channel (`NEUTRAL` for the file
        with no locale), else any it has."""
        available = self.locales(channel)
        for locale in wanted:
            if locale is not None and locale in available:
                return locale
            if locale and locale[:2] in available:
                return locale[:2]
        return available[0] if available else None

    def render(self, channel: str, wanted_locales: list[str | None], context: Mapping[str, Any]) -> Rendered:
        """Render for a channel in the best locale; raises KeyError if the channel has no file."""
        locale = self.pick_locale(channel, wanted_locales)
        if locale is None:
            raise KeyError(f"template '{self.name}' has no {channel} version")
        html_part = self.parts.get((channel, locale, "html"))
        text_part = self.parts.get((channel, locale, "txt"))
        main = html_part or text_part
        assert main is not None
        front = {**(text_part.front if text_part else {}), **(html_part.front if html_part else {})}
        # Money and dates are written as the file's language writes them, in the customer's
        # variant of it when they have one (`en_GB` for an `en` file).
        writing = next((w for w in wanted_locales if w and w[:2] == locale[:2]), locale)
        with evaluating(dataclasses.replace(current_scope(), locale=writing)):
            extra = {key: _render_value(value, context) for key, value in front.items()}
            html = render(html_part.body, context).strip() if html_part else None
            body = render(text_part.body, context).strip() if text_part else html_to_text(html or "")
        subject = extra.pop("subject", None)
        return Rendered(channel, locale, body, subject=subject, html=html, extra=extra)


def _render_value(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, LazyTemplate):
        return render(value, context).strip()
    if isinstance(value, dict):
        return {key: _render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [_render_value(item, context) for item in value]
    return value


_HIDDEN = re.compile(r"(?is)<(script|style|head).*?</\1>")
_LINK = re.compile(r'(?is)<a\s[^>]*href="([^"]+)"[^>]*>(.*?)</a>')
_BLOCK_END = re.compile(r"(?i)</p>|</h\d>|</table>")
_LINE_END = re.compile(r"(?i)<br\s*/?>|</div>|</li>|</tr>")
_TAG = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def html_to_text(html: str) -> str:
    """A readable text version of an HTML body: links kept as `text (url)`."""
    # Compiled once: an email without a text file gets this version at every send.
    text = _HIDDEN.sub("", html)
    text = _LINK.sub(r"\2 (\1)", text)
    text = _BLOCK_END.sub("\n\n", text)  # a paragraph ends with a blank line
    text = _LINE_END.sub("\n", text)
    text = _TAG.sub("", text)
    for entity, char in (
        ("&nbsp;", " "),
        ("&amp;", "&"),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", '"'),
        ("&#39;", "'"),
    ):
        text = text.replace(entity, char)
    text = "\n".join(line.strip() for line in _SPACES.sub(" ", text).split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


class TemplateLibrary:
    """Every template of a project, loaded and compiled."""

    def __init__(self, templates: dict[str, MessageTemplate], broken: Iterable[str] = ()):
        self.templates = templates
        # Templates with a file that did not load: already reported, so a scenario naming one
        # is not told again that it is unknown or lacks a channel.
        self.broken = frozenset(broken)

    def __contains__(self, name: str) -> bool:
        return name in self.templates

    def get(self, name: str) -> MessageTemplate | None:
        """A template by name."""
        return self.templates.get(name)

    def names(self) -> list[str]:
        """Every template name, sorted."""
        return sorted(self.templates)

    def warm(self) -> None:
        """Compile every file and front matter value now, not on its first render: for a
        project that runs (`boomerang check` only checks them, which needs no compiling)."""
        for template in self.templates.values():
            for part in template.parts.values():
                part.body.compiled()
                _warm_value(part.front)


def _warm_value(value: Any) -> None:
    if isinstance(value, LazyTemplate):
        value.compiled()
    elif isinstance(value, dict):
        for item in value.values():
            _warm_value(item)
    elif isinstance(value, list):
        for item in value:
            _warm_value(item)


def load_templates(
    directory: Path, functions: Mapping[str, Any] | None, channels: Mapping[str, Any]
) -> tuple[TemplateLibrary, list[Problem]]:
    """Load every template under `directory`; returns the library and the problems found.

    `channels` are the channel kinds by name (`Registry.channel_kinds`): their declared
    extensions and front matter decide which files and keys are valid.
    """
    text_env = make_environment(functions)
    html_env = make_environment(functions, autoescape=True)
    templates: dict[str, MessageTemplate] = {}
    broken: set[str] = set()
    problems: list[Problem] = []
    if not directory.is_dir():
        return TemplateLibrary(templates), problems
    for folder in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        template = MessageTemplate(folder.name)
        for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            match = _FILE.match(file.name)
            kind = channels.get(match["channel"]) if match else None
            if not match or kind is None:
                problems.append(
                    Problem(
                        str(file),
                        1,
                        1,
                        f"'{file.name}' is not named <channel>[.<locale>].<html|txt> with a channel from "
                        f"{', '.join(sorted(channels)) or 'none registered'}"
                        f"{did_you_mean(file.name.split('.')[0], channels)}",
                    )
                )
                broken.add(template.name)
                continue
            if match["ext"] not in kind.extensions:
                problems.append(
                    Problem(
                        str(file),
                        1,
                        1,
                        f"'{file.name}': a {kind.name} template ends in "
                        f"{' or '.join('.' + ext for ext in kind.extensions)}",
                    )
                )
                broken.add(template.name)
                continue
            try:
                body_env = html_env if match["ext"] == "html" else text_env
                part = _load_part(file, kind, match["locale"] or NEUTRAL, match["ext"], body_env, text_env)
            except ProblemError as exc:
                problems.extend(exc.problems)
                broken.add(template.name)
                continue
            template.parts[(part.channel, part.locale, part.kind)] = part
        if template.parts:
            templates[template.name] = template
        for channel, locale in sorted({(channel, locale) for channel, locale, _ in template.parts}):
            parts = [part for (ch, loc, _), part in template.parts.items() if (ch, loc) == (channel, locale)]
            article = "an" if channel[0] in "aeiou" else "a"
            for key in channels[channel].required_front_matter:
                if not any(key in part.front for part in parts):
                    problems.append(
                        Problem(
                            str(parts[0].file),
                            1,
                            1,
                            f"{article} {channel} template needs '{key}:' in its front matter",
                        )
                    )
    return TemplateLibrary(templates, broken), problems


def _load_part(
    file: Path, channel: Any, locale: str, kind: str, environment: Sandbox, text_environment: Sandbox
) -> Part:
    """One template file; its front matter (a subject, a URL) is text, never HTML-escaped."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProblemError([Problem(str(file), 1, 1, f"cannot read template: {exc}")]) from None
    front: dict[str, Any] = {}
    names: list[NameUse] = []
    calls: list[RecommendationCall] = []
    lines = text.splitlines()
    body_line = 1
    if text.startswith("---\n"):
        end = text.find("\n---\n", 3)
        if end < 0:
            raise ProblemError([Problem(str(file), 1, 1, "front matter opened with --- is never closed")])
        raw = parse_yaml("\n" + text[4:end], str(file))  # the leading newline keeps line numbers
        if raw is not None and not isinstance(raw, CommentedMap):
            raise ProblemError(
                [Problem(str(file), 2, 1, "front matter must be a mapping such as subject: ...")]
            )
        front, uses_by_key, calls_by_key = _compile_front(
            raw or CommentedMap(), channel, file, text_environment
        )
        for key, uses in uses_by_key.items():
            line, col = value_position(raw, key)
            names.extend(place(uses, lines, line, col, template=True))
            calls.extend(placed_call(call, line, lines) for call in calls_by_key[key])
        body_line = text[: end + 5].count("\n") + 1
        text = text[end + 5 :]
    try:
        body, uses, found = _checked(text, environment, refusals_first=False)
        calls.extend(placed_call(call, body_line, lines) for call in found)
    except TemplateSyntaxError as exc:
        line = (exc.lineno or 1) + body_line - 1
        what = "refused" if isinstance(exc, Refused) else "template syntax"
        raise ProblemError([Problem(str(file), line, 1, f"{what}: {exc.message}")]) from None
    names.extend(place(uses, lines, body_line, 1, template=True))
    return Part(file, channel.name, locale, kind, body, front, sorted(names), calls)


def _checked(
    text: str, environment: Sandbox, *, refusals_first: bool
) -> tuple[LazyTemplate, list[Any], list[RecommendationCall]]:
    """A template's text parsed once, for everything `check` finds in it: its syntax, the
    names it uses (`template_names`, whose pass of Jinja's code generator also raises what
    compiling would, such as an unknown filter), what the sandbox refuses (which compiling
    raises before generating code) and its `recommendations()` calls. Raises
    `TemplateSyntaxError` (`Refused`) as compiling would; returns the template, compiled on
    first render, its `template_names` and its `recommendation_calls`."""
    tree = environment.parse(text)
    refused = expressions.refusals(tree, environment)  # as compiling looks it up (tests switch it off)
    if refused and refusals_first:
        raise Refused(refused[0][1], refused[0][0])
    uses = template_names(tree, environment)
    if refused:
        raise Refused(refused[0][1], refused[0][0])
    return LazyTemplate(environment, text), uses, recommendation_calls(tree)


def _compile_front(
    raw: CommentedMap, channel: Any, file: Path, environment: Sandbox
) -> tuple[dict[str, Any], dict[Any, list[Any]], dict[Any, list[RecommendationCall]]]:
    """The front matter's values checked, the names each key's texts use and their
    `recommendations()` calls; keys and value types as the channel declares them."""
    problems = []
    front: dict[str, Any] = {}
    uses: dict[Any, list[Any]] = {}
    calls: dict[Any, list[RecommendationCall]] = {}
    allowed = channel.front_matter
    for key, value in raw.items():
        if key not in allowed:
            line, col = value_position(raw, key)
            expected = ", ".join(allowed) or "nothing"
            problems.append(
                Problem(
                    str(file),
                    line,
                    col,
                    f"unknown front matter '{key}' for {channel.name}{did_you_mean(str(key), allowed)}; "
                    f"expected {expected}",
                )
            )
            continue
        types = allowed[key] if isinstance(allowed[key], tuple) else (allowed[key],)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            line, col = value_position(raw, key)
            problems.append(
                Problem(
                    str(file),
                    line,
                    col,
                    f"'{key}' must be {' or '.join(_type_name(t) for t in types)}, "
                    f"not {_type_name(type(value))}",
                )
            )
            continue
        try:
            uses[key], calls[key] = [], []
            front[str(key)] = _compile_value(value, environment, uses[key], calls[key])
        except TemplateSyntaxError as exc:
            line, col = value_position(raw, key)
            what = "refused" if isinstance(exc, Refused) else "template syntax"
            problems.append(Problem(str(file), line, col, f"{what} in '{key}': {exc.message}"))
    if problems:
        raise ProblemError(problems)
    return front, uses, calls


# How a front matter type reads in a message, as a marketer writes YAML; most specific first.
_TYPE_NAMES = (
    (bool, "true or false"),
    (int, "a whole number"),
    (float, "a number"),
    (str, "text"),
    (dict, "a mapping"),
    (list, "a list"),
)


def _type_name(kind: type) -> str:
    return next(
        (name for base, name in _TYPE_NAMES if issubclass(kind, base)),
        "empty" if kind is type(None) else kind.__name__,
    )


def _compile_value(value: Any, environment: Sandbox, uses: list[Any], calls: list[RecommendationCall]) -> Any:
    """A front matter value with its texts checked (`_checked`); the names they use go to
    `uses`, their `recommendations()` calls to `calls`."""
    if isinstance(value, str):
        template, found, called = _checked(value, environment, refusals_first=True)
        uses.extend(found)
        calls.extend(called)
        return template
    if isinstance(value, dict):
        return {str(k): _compile_value(v, environment, uses, calls) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile_value(v, environment, uses, calls) for v in value]
    return value
