"""`boomerang.yaml`: loading, `${VAR}` substitution from the environment, validation.

Every problem is reported as `file:line:col: error: message`, pointing at the key or value
that needs changing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from boomerang.attribution import Windows
from boomerang.clock import parse_duration
from boomerang.database_url import is_postgresql, url_problem
from boomerang.ingest import IngestWindow
from boomerang.problems import Problem, ProblemError, did_you_mean
from boomerang.yamlfile import key_position, parse_yaml, value_position

DEFAULT_CONFIG = "boomerang.yaml"
CONFIG_ENV = "BOOMERANG_CONFIG"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# A placeholder is as long as the `${...}` it replaces and valid anywhere in YAML.
_OPEN, _PAD, _CLOSE = "\u24d1", "\u24df", "\u24d4"
_PLACEHOLDER = re.compile(f"{_OPEN}({_PAD}*[0-9a-z]+){_CLOSE}")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_MAX_FUTURE = timedelta(days=36525)


@dataclass
class Config:
    """A loaded, validated configuration. Paths are absolute, resolved from the file's folder."""

    path: Path
    database: Path | str  # a SQLite file, or a PostgreSQL URL (`database_url.is_postgresql`)
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    secret: str | None = None
    api_token: str | None = None
    admin_token: str | None = None  # GET /report
    scenarios: Path = Path("scenarios")
    templates: Path = Path("templates")
    plugin_dirs: list[Path] = field(default_factory=list)
    default_locale: str = "en"
    default_timezone: str = "UTC"
    outbox: Path | None = None
    log_level: str = "info"
    ingest_window: IngestWindow = field(default_factory=IngestWindow)
    sources: dict[str, dict] = field(default_factory=dict)
    actions: dict[str, dict] = field(default_factory=dict)
    channels: dict[str, dict] = field(default_factory=dict)
    promo_providers: dict[str, dict] = field(default_factory=dict)
    contact_plan: dict[str, Any] = field(default_factory=dict)
    segments: dict[str, str] = field(default_factory=dict)
    attribution: Windows = field(default_factory=Windows)  # report.attribution
    currency: str | None = None  # report.currency: the shop's, for revenue in the report
    # `recommendations: {cross_sell: {bicycles: [tyres, helmets]}}`: a category bought or in the
    # cart, and the categories the `cross_sell` strategy suggests for it.
    cross_sell: dict[str, list[str]] = field(default_factory=dict)
    document: Any = field(default=None, repr=False)  # the parsed YAML, kept for positions

    @property
    def on_postgresql(self) -> bool:
        """Whether the database is a PostgreSQL server's (else a SQLite file)."""
        return is_postgresql(self.database)

    @property
    def state_folder(self) -> Path:
        """Where files that live beside the database go: the SQLite file's folder, else the
        config file's."""
        return self.path.parent if self.on_postgresql else Path(self.database).parent

    def no_database(self) -> bool:
        """Whether the SQLite file named does not exist yet (a server's database is opened to
        find out)."""
        return not self.on_postgresql and not Path(self.database).exists()

    def where(self, *keys: str | int, at_key: bool = False) -> tuple[str, int, int]:
        """File, line and column of the value at a path of keys (or of the last key itself)."""
        node = self.document
        line, col = 1, 1
        for index, key in enumerate(keys):
            if at_key and index == len(keys) - 1 and isinstance(node, CommentedMap) and key in node:
                line, col = key_position(node, key)
                break
            if not isinstance(node, CommentedMap | CommentedSeq):
                break
            try:
                child = node[key]
            except (KeyError, IndexError, TypeError):
                line, col = key_position(node, key) if isinstance(node, CommentedMap) else (line, col)
                break
            line, col = value_position(node, key)
            node = child
        return str(self.path), line, col

    def problem(self, keys: tuple[str | int, ...], message: str, *, at_key: bool = False) -> Problem:
        """A `Problem` pointing at the value at `keys` (or at the key, for an unknown setting)."""
        file, line, col = self.where(*keys, at_key=at_key)
        return Problem(file, line, col, message)


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    """The config file to use: the one given, else `$BOOMERANG_CONFIG`, else `./boomerang.yaml`."""
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_config(path: str | os.PathLike, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate a config file; raises `ProblemError` listing every problem found."""
    path = Path(path)
    if not path.exists():
        raise ProblemError(
            [Problem(str(path), 1, 1, "config file not found; create one with `boomerang init`")]
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProblemError([Problem(str(path), 1, 1, f"cannot read file: {exc}")]) from None
    reader = _Reader(str(path), os.environ if environ is None else environ)
    document = parse_yaml(reader.mask(text), str(path))
    if document is None:
        document = CommentedMap()
    if not isinstance(document, CommentedMap):
        raise ProblemError([Problem(str(path), 1, 1, "the config must be a mapping of settings")])
    document = reader.substitute(document)
    config = reader.build(path, document)
    if reader.problems:
        raise ProblemError(reader.problems)
    return config


class _Reader:
    """Collects problems while turning the YAML document into a `Config`."""

    def __init__(self, file: str, environ: Mapping[str, str]):
        self.file = file
        self.environ = environ
        self.problems: list[Problem] = []

    def error(self, position: tuple[int, int], message: str) -> None:
        self.problems.append(Problem(self.file, position[0], position[1], message))

    # ${VAR} substitution. Variables are replaced in the raw text by placeholders of the same
    # length before parsing, so that `{secret: ${X}}` is valid YAML in flow style, every
    # position stays right, and a missing variable is reported exactly where its `${` stands.
    def mask(self, text: str) -> str:
        self.variables: dict[int, tuple[str, str | None, int, int]] = {}
        lines = text.split("\n")
        for number, line in enumerate(lines):

            def placeholder(match: re.Match, number: int = number) -> str:
                index = len(self.variables)
                self.variables[index] = (match.group(1), match.group(2), number + 1, match.start() + 1)
                digits = _base36(index)
                width = len(match.group(0)) - 2
                if len(digits) > width:
                    raise ProblemError(
                        [Problem(self.file, number + 1, match.start() + 1, "too many variables")]
                    )
                return _OPEN + digits.rjust(width, _PAD) + _CLOSE

            lines[number] = _VARIABLE.sub(placeholder, line)
        return "\n".join(lines)

    def substitute(self, node: Any) -> Any:
        if isinstance(node, CommentedMap):
            for key in list(node):
                node[key] = self.substitute(node[key])
        elif isinstance(node, CommentedSeq):
            for index in range(len(node)):
                node[index] = self.substitute(node[index])
        elif isinstance(node, str) and _OPEN in node:
            return _PLACEHOLDER.sub(self._value_of, str(node))
        return node

    def _value_of(self, match: re.Match) -> str:
        name, default, line, col = self.variables[int(match.group(1).lstrip(_PAD), 36)]
        if name in self.environ:
            return self.environ[name]
        if default is not None:
            return default
        self.error(
            (line, col),
            f"environment variable {name} is not set; export it, or give a default as ${{{name}:-value}}",
        )
        return ""

    # validation
    def build(self, path: Path, doc: CommentedMap) -> Config:
        base = path.parent.resolve()
        known = {
            "database",
            "listen",
            "public_url",
            "secret",
            "api_token",
            "admin_token",
            "report",
            "scenarios",
            "templates",
            "plugin_dirs",
            "default_locale",
            "outbox",
            "sources",
            "actions",
            "channels",
            "promo_providers",
            "contact_plan",
            "segments",
            "recommendations",
            "log_level",
            "ingest",
        }
        for key in doc:
            if key not in known:
                self.error(key_position(doc, key), f"unknown setting '{key}'{did_you_mean(str(key), known)}")

        def resolve(value: str) -> Path:
            return (base / Path(value).expanduser()).resolve()

        config = Config(path=path.resolve(), database=resolve("boomerang.db"), document=doc)
        if "database" in doc:
            database = self.string(doc, "database", _database_check)
            config.database = database if is_postgresql(database) else resolve(database)
        listen = self.mapping(doc, "listen", {"host", "port"})
        if "host" in listen:
            config.host = self.string(listen, "host")
        if "port" in listen:
            config.port = self.integer(listen, "port", 0, 65535)
        # Empty (the demo's `${BOOMERANG_PUBLIC_URL:-}` unset) is left out: the listening address.
        if doc.get("public_url") not in (None, ""):
            config.public_url = self.string(doc, "public_url", _url_check).rstrip("/")
        else:
            config.public_url = f"http://{config.host}:{config.port}"
        for name in ("secret", "api_token", "admin_token"):
            if doc.get(name) not in (None, ""):
                setattr(config, name, self.string(doc, name, _secret_check))
        for name in ("scenarios", "templates"):
            setattr(config, name, resolve(self.string(doc, name) if name in doc else name))
        if doc.get("outbox") is not None:
            config.outbox = resolve(self.string(doc, "outbox"))
        config.plugin_dirs = [resolve(item) for item in self.string_list(doc, "plugin_dirs")]
        if "default_locale" in doc:
            config.default_locale = self.string(doc, "default_locale")
        if "log_level" in doc:
            config.log_level = self.string(doc, "log_level", _choice_check(_LOG_LEVELS)).lower()
        config.ingest_window = self.ingest_window(self.mapping(doc, "ingest", {"earliest", "future"}))
        config.sources = self.sections(doc, "sources")
        config.actions = self.sections(doc, "actions")
        config.channels = self.sections(doc, "channels")
        config.promo_providers = self.sections(doc, "promo_providers")
        plan = self.mapping(doc, "contact_plan", None)
        config.contact_plan = dict(plan)
        if "default_timezone" in plan:
            config.default_timezone = self.string(plan, "default_timezone", _timezone_check)
        segments = self.mapping(doc, "segments", None)
        config.segments = {str(name): self.string(segments, name) for name in segments}
        recommendations = self.mapping(doc, "recommendations", {"cross_sell"})
        rules = self.mapping(recommendations, "cross_sell", None)
        config.cross_sell = {str(name): self.string_list(rules, name, "categories") for name in rules}
        self.report(self.mapping(doc, "report", {"attribution", "currency"}), config)
        return config

    def report(self, section: CommentedMap, config: Config) -> None:
        """`report: {attribution: {click: 5d, open: 1d, delivery: 1d}, currency: EUR}`."""
        if section.get("currency") is not None:
            config.currency = self.string(section, "currency", _currency_check).upper()
        windows = self.mapping(section, "attribution", {"click", "open", "delivery"})
        values = {}
        for kind in ("click", "open", "delivery"):
            if kind not in windows:
                continue
            try:
                values[str(kind)] = parse_duration(windows[kind])
            except (ValueError, OverflowError) as exc:
                self.error(value_position(windows, kind), f"'report.attribution.{kind}': {exc}")
        config.attribution = Windows(**values)

    def ingest_window(self, section: CommentedMap) -> IngestWindow:
        """`ingest: {earliest: 2000-01-01, future: 1d}`: the `at` moments live events may have."""
        window = IngestWindow()
        if "earliest" in section:
            value = section["earliest"]
            # YAML reads an unquoted 2000-01-01 as a date; a quoted one stays text.
            text = value.isoformat() if isinstance(value, date) else str(value)
            try:
                earliest = (
                    datetime.combine(value, datetime.min.time(), UTC)
                    if type(value) is date
                    else datetime.fromisoformat(text)
                )
                window = IngestWindow(earliest.replace(tzinfo=earliest.tzinfo or UTC), window.future)
            except (TypeError, ValueError):
                self.error(
                    value_position(section, "earliest"),
                    f"'earliest': '{text}' is not a date such as 2000-01-01",
                )
        if "future" in section:
            value = section["future"]
            try:
                future = parse_duration(value)
            except OverflowError:  # a number of days no datetime can add
                future = _MAX_FUTURE * 2
            except ValueError as exc:
                self.error(value_position(section, "future"), f"'future': {exc}")
                return window
            if future > _MAX_FUTURE:
                self.error(value_position(section, "future"), f"'future': '{value}' is more than 100 years")
            else:
                window = IngestWindow(window.earliest, future)
        return window

    def mapping(self, parent: CommentedMap, key: str, known: set[str] | None) -> CommentedMap:
        value = parent.get(key)
        if value is None:
            return CommentedMap()
        if not isinstance(value, CommentedMap):
            self.error(value_position(parent, key), f"'{key}' must be a mapping of settings")
            return CommentedMap()
        for sub in value if known is not None else ():
            if sub not in known:
                self.error(
                    key_position(value, sub),
                    f"unknown setting '{key}.{sub}'{did_you_mean(str(sub), known)}",
                )
        return value

    def sections(self, parent: CommentedMap, key: str) -> dict[str, dict]:
        """A mapping of named sections (`channels`, `sources`, `actions`, `promo_providers`),
        each itself a mapping."""
        value = self.mapping(parent, key, None)
        result = {}
        for name, section in value.items():
            if section is None:
                section = CommentedMap()
            if not isinstance(section, CommentedMap):
                self.error(value_position(value, name), f"'{key}.{name}' must be a mapping of settings")
                continue
            result[str(name)] = section
        return result

    def string(self, parent: Any, key: Any, check: Callable[[str], str | None] | None = None) -> str:
        value = parent[key]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.error(value_position(parent, key), f"'{key}' must be a text value")
            return ""
        text = str(value)
        complaint = check(text) if check else None
        if complaint:
            self.error(value_position(parent, key), f"'{key}': {complaint}")
        return text

    def integer(self, parent: Any, key: Any, low: int, high: int) -> int:
        value = parent[key]
        try:
            if isinstance(value, bool):
                raise ValueError
            number = int(str(value))
        except ValueError:
            self.error(value_position(parent, key), f"'{key}' must be a whole number, not '{value}'")
            return low
        if not low <= number <= high:
            self.error(value_position(parent, key), f"'{key}' must be between {low} and {high}")
        return number

    def string_list(self, parent: CommentedMap, key: str, what: str = "paths") -> list[str]:
        value = parent.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, CommentedSeq):
            self.error(value_position(parent, key), f"'{key}' must be a list of {what}")
            return []
        return [self.string(value, index) for index in range(len(value))]


def _database_check(text: str) -> str | None:
    if is_postgresql(text):
        return url_problem(text)
    if re.match(r"^[a-z][a-z0-9+.-]*://", text, re.IGNORECASE):
        scheme = text.split("://")[0]
        return f"'{scheme}' databases are not supported: a SQLite file's path or a postgresql:// URL"
    return None


def _url_check(text: str) -> str | None:
    if not re.match(r"^https?://[^/\s]+", text):
        return f"'{text}' is not an http(s) URL such as https://track.shop.example"
    return None


def _secret_check(text: str) -> str | None:
    if len(text) < 16:
        return "must be at least 16 characters long; generate one with `openssl rand -hex 32`"
    return None


def _currency_check(text: str) -> str | None:
    if not re.match(r"^[A-Za-z]{3}$", text):
        return f"'{text}' is not a currency code such as EUR or RUB"
    return None


def _timezone_check(text: str) -> str | None:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown timezone '{text}'; use an IANA name such as Europe/Moscow"
    return None


def _choice_check(choices: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        if text.lower() not in choices:
            return f"'{text}' is not one of {', '.join(choices)}{did_you_mean(text, choices)}"
        return None

    return check


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if number == 0:
            return text
