"""Fuzzing: every HTTP endpoint of the real daemon, the scenario and config loaders and the template
renderer, with arbitrary input. An endpoint answers anything below 500 and never a traceback; a
loader returns its result or a problem with a position; rendering gives text or an error that
says what is wrong. YAML "billion laughs" and anchors that make a document contain itself are
refused quickly.

The daemon is the real `boomerang run` process, started once for the module, with every built-in
channel configured (writing to the outbox, so nothing is sent); at the end its log must hold no
traceback. Example counts keep the file at a few seconds; `make soak` runs twenty times as many.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import signal
import sqlite3
import string
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import TemplateError
from jinja2.exceptions import SecurityError
from twilio.request_validator import RequestValidator

from boomerang import tracking
from boomerang.config import load_config
from boomerang.expressions import RenderLimitExceeded
from boomerang.plugin_manager import load_plugins
from boomerang.plugins.channels.email import EmailChannel
from boomerang.plugins.channels.push import write_key_pair
from boomerang.plugins.channels.telegram import link_parameter
from boomerang.problems import ProblemError
from boomerang.project import load_project
from boomerang.scaffold import create_project
from boomerang.scenarios import compile_scenario
from boomerang.templates import load_templates
from boomerang.tokens import seal, sign
from boomerang.yamlfile import MAX_EXPANDED_NODES, parse_yaml
from conftest import (
    API_TOKEN,
    SECRET,
    bearer,
    free_port,
    only_email,
    start_daemon,
    wait_until,
    wait_until_serving,
)
from fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN
from reliability.soak import fuzzing

HOOK_SECRET = "hook-secret_0123456789"
SHOP = "https://shop.example"  # the site source's origin
TELEGRAM_TOKEN = "123456:TEST-token_abc"
IMMEDIATE = """
scenario: welcome
category: transactional
trigger: {event: signup.completed}
steps:
  - send: welcome
"""
WELCOME = (
    '---\nsubject: Welcome {{ customer.name }}\n---\n<p>Hi <a href="https://shop.example/">shop</a></p>\n'
)
# Every route the daemon serves: the core's (core/daemon.py, core/tracking.py) and the plugins'.
ROUTES = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("POST", "/events"),
    ("GET", "/o/{token}"),
    ("GET", "/c/{token}"),
    ("GET", "/u/{token}"),
    ("POST", "/u/{token}"),
    ("GET", "/push/sw.js"),
    ("GET", "/push/key"),
    ("POST", "/push/subscribe"),
    ("OPTIONS", "/push/subscribe"),
    ("POST", "/push/click"),
    ("OPTIONS", "/push/click"),
    ("POST", "/hooks/telegram"),
    ("GET", "/t.js"),
    ("POST", "/t"),
    ("OPTIONS", "/t"),
    ("POST", "/callbacks/sms"),
    ("POST", "/callbacks/whatsapp"),
]


class Daemon:
    """The running daemon: where it listens, and the id of a message it has sent."""

    def __init__(self, port: int, public_url: str, message_id: str):
        self.port = port
        self.public_url = public_url
        self.message_id = message_id

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """One request; fails the test on a 5xx or a traceback in the answer."""
        # A Content-Length that lies about the body leaves the server waiting for bytes that
        # never come, as any HTTP server would, until the client times out: the length is the
        # client's framing, not the fuzzed content, so http.client writes the true one.
        headers = {name: value for name, value in (headers or {}).items() if name.lower() != "content-length"}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
        finally:
            connection.close()
        assert response.status < 500, (method, path, headers, body[:300], response.status, answer[:500])
        assert b"Traceback" not in answer and b'File "' not in answer, answer[:500]
        return response.status, answer


def configure(directory: Path, public_url: str) -> None:
    """Every built-in channel configured, the outbox on, and a scenario that sends at once."""
    only_email(directory)
    write_key_pair(directory)
    twilio = f"account_sid: {ACCOUNT_SID}, auth_token: {AUTH_TOKEN}, api_base: http://127.0.0.1:9"
    telegram = json.dumps(
        {
            "token": TELEGRAM_TOKEN,
            "api_base": "http://127.0.0.1:9",
            "bot_username": "ShopBot",
            "webhook_secret": HOOK_SECRET,
        }
    )
    channels = (
        "channels:\n"
        f'  sms: {{{twilio}, from: "+15550001111"}}\n'
        f'  whatsapp: {{{twilio}, from: "whatsapp:+15550001111"}}\n'
        '  push: {vapid_private_key: ./vapid.pem, subject: "mailto:ops@shop.example"}\n'
        f"  telegram: {telegram}\n"
    )
    config = directory / "boomerang.yaml"
    text = config.read_text().replace("channels:\n", channels)
    text += f"sources:\n  site: {{origins: [{SHOP}], per_ip: 0, per_visitor: 100000}}\n"
    config.write_text(text.replace("${BOOMERANG_PUBLIC_URL:-}", public_url))
    (directory / "scenarios" / "welcome.yaml").write_text(IMMEDIATE)
    (directory / "templates" / "welcome").mkdir()
    (directory / "templates" / "welcome" / "email.en.html").write_text(WELCOME)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The real daemon, shared by the module's fuzzers; its log must end without a traceback."""
    directory = tmp_path_factory.mktemp("fuzz") / "project"
    create_project(directory)
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    configure(directory, public_url)
    with fuzzed_daemon(directory, port):
        running = Daemon(port, public_url, "")
        signup = {
            "id": "signup-1",
            "type": "signup.completed",
            "at": "2026-03-02T10:00:00Z",
            "customer": {"id": "c-1", "email": "anna@example.com", "name": "Anna"},
        }
        assert running.request("POST", "/events", json.dumps(signup).encode(), bearer(API_TOKEN))[0] == 200

        def sent() -> str | None:
            with sqlite3.connect(f"file:{directory / 'boomerang.db'}?mode=ro", uri=True) as db:
                row = db.execute("SELECT id FROM messages WHERE status = 'sent'").fetchone()
            return row[0] if row else None

        running.message_id = wait_until(sent, 30, "the welcome message to be sent")
        yield running


@contextlib.contextmanager
def fuzzed_daemon(directory: Path, port: int) -> Iterator[subprocess.Popen]:
    """The real daemon of the project in `directory`, serving on `port`. On leaving, SIGTERM
    must end it with exit code 0, and its log (`daemon.log` beside the project) must hold no
    traceback: aiohttp logs a request it cannot even parse (and answers it 400) with one of its
    parser, which is the library's noise, not ours; any other is a bug."""
    log = directory.parent / "daemon.log"
    environment = {"BOOMERANG_API_TOKEN": API_TOKEN, "BOOMERANG_SECRET": SECRET, "BOOMERANG_PORT": str(port)}
    process = start_daemon(directory, log, **environment)
    try:
        wait_until_serving(port)
        yield process
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d )", log.read_text())
    tracebacks = [r for r in records if "Traceback" in r and "aiohttp.http_exceptions." not in r]
    assert not tracebacks, "\n".join(tracebacks)


def test_the_fuzzed_routes_are_every_route_the_daemon_serves(tmp_path: Path) -> None:
    """ROUTES is written out for the fuzzers; a route added to the core or a plugin joins it."""
    directory = tmp_path / "project"
    create_project(directory)
    configure(directory, "https://shop.example")
    config = directory / "boomerang.yaml"
    project = load_project(config, load_plugins(load_config(config).plugin_dirs))
    owners = [*project.registry.sources.values(), *project.registry.channels.values()]
    served = {(route.method, route.path) for owner in owners for route in owner.routes()}
    served |= {(route.method, route.path) for route in tracking.routes(SECRET, None, None, dict)}
    assert served | {("GET", "/healthz"), ("GET", "/metrics")} == set(ROUTES)


# what requests are made of
SAFE_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
HEADER_NAMES = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=20)
HEADER_VALUES = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
)
KNOWN_HEADERS = st.sampled_from(
    [
        "Authorization",
        "Content-Type",
        "Content-Encoding",
        "Transfer-Encoding",
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
        "X-Telegram-Bot-Api-Secret-Token",
        "X-Twilio-Signature",
        "Cookie",
        "Accept-Language",
    ]
)
HEADERS = st.dictionaries(
    KNOWN_HEADERS | HEADER_NAMES, HEADER_VALUES | HEADER_VALUES.map("Bearer {}".format), max_size=5
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | SAFE_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SAFE_TEXT, inner, max_size=4),
    max_leaves=20,
)
BODIES = st.binary(max_size=300) | JSON.map(lambda value: json.dumps(value).encode())
QUERIES = st.lists(st.tuples(SAFE_TEXT, SAFE_TEXT), max_size=3).map(
    lambda pairs: ("?" + urlencode(pairs)) if pairs else ""
)
TOKEN_VALUES = SAFE_TEXT | st.just("")


def path_of(template: str, token: str, query: str) -> str:
    """A route's path with its `{token}` filled in (escaped) and a query string added."""
    return template.replace("{token}", quote(token, safe="") or "x") + query


@pytest.mark.slow
@fuzzing(120)
@given(
    route=st.sampled_from(ROUTES),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"]) | st.none(),
    token=TOKEN_VALUES,
    suffix=st.sampled_from(["", "/", "/x", "%00", "/../events", "//"]),
    query=QUERIES,
    headers=HEADERS,
    body=BODIES,
)
def test_any_request_to_any_route_is_answered_below_500(
    daemon: Daemon, route, method, token, suffix, query, headers, body
) -> None:
    """Any method, path, query, headers and body at every route: an answer below 500."""
    daemon.request(method or route[0], path_of(route[1], token, suffix + query), body, headers)


EVENT_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "id": JSON,
        "type": st.sampled_from(["signup.completed", "cart.updated", "order.placed", "x"]) | JSON,
        "at": st.sampled_from(
            ["2026-03-02T10:00:00Z", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"]
        )
        | JSON,
        "customer": st.fixed_dictionaries(
            {}, optional={"id": JSON, "email": JSON, "phone": JSON, "timezone": JSON, "locale": JSON}
        )
        | JSON,
        "data": JSON,
    },
)


@pytest.mark.slow
@fuzzing(80)
@given(
    events=st.lists(EVENT_FIELDS, min_size=1, max_size=4),
    form=st.sampled_from(["object", "array", "lines"]),
    headers=HEADERS,
)
def test_events_with_the_right_token_and_any_content_are_answered_below_500(
    daemon: Daemon, events: list[dict], form: str, headers: dict[str, str]
) -> None:
    """`POST /events` past the bearer check: event-shaped JSON with any field values."""
    if form == "object":
        body = json.dumps(events[0])
    elif form == "array":
        body = json.dumps(events)
    else:
        body = "\n".join(json.dumps(e) for e in events)
    daemon.request("POST", "/events", body.encode(), {**headers, **bearer(API_TOKEN)})


SUBSCRIPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "endpoint": st.sampled_from(["https://push.example/1", "http://127.0.0.1/x", ""]) | JSON,
        "expirationTime": JSON,
        "keys": st.fixed_dictionaries({}, optional={"p256dh": JSON, "auth": JSON}) | JSON,
    },
)


@pytest.mark.slow
@fuzzing(60)
@given(
    customer=TOKEN_VALUES,
    body=st.fixed_dictionaries({}, optional={"subscription": SUBSCRIPTIONS | JSON}) | JSON,
    click=TOKEN_VALUES,
)
def test_push_routes_with_valid_tokens_are_answered_below_500(
    daemon: Daemon, customer: str, body: Any, click: str
) -> None:
    """`/push/subscribe` with a sealed token for any customer id and any subscription;
    `/push/click` with a signed click token for any value."""
    try:
        token = seal(SECRET, "push", customer or "c-1")
    except ValueError:
        return  # an id too long to seal: no token can carry it
    daemon.request("POST", "/push/subscribe", json.dumps(body).encode(), bearer(token))
    daemon.request("POST", "/push/click", b"", bearer(sign(SECRET, "click", click)))


UPDATES = st.fixed_dictionaries(
    {"update_id": st.integers() | JSON},
    optional={
        "message": st.fixed_dictionaries(
            {},
            optional={
                "chat": st.fixed_dictionaries(
                    {"type": st.sampled_from(["private", "group"]) | JSON, "id": st.integers() | JSON}
                )
                | JSON,
                "from": st.fixed_dictionaries({}, optional={"language_code": JSON, "id": JSON}) | JSON,
                "text": st.sampled_from(["/start", "/start x", "/start@ShopBot", "hello"]) | JSON,
                "date": st.integers() | JSON,
            },
        )
        | JSON
    },
)


@pytest.mark.slow
@fuzzing(60)
@given(update=UPDATES | JSON, customer=TOKEN_VALUES)
def test_telegram_updates_with_the_secret_are_answered_below_500(
    daemon: Daemon, update: Any, customer: str
) -> None:
    """The webhook past its secret: update-shaped JSON with any values, and `/start` with a
    valid link token for any customer id."""
    headers = {"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET, "Content-Type": "application/json"}
    daemon.request("POST", "/hooks/telegram", json.dumps(update).encode(), headers)
    try:
        start = f"/start {link_parameter(SECRET, customer or 'c-1')}"
    except ValueError:
        return  # an id too long for Telegram's start parameter
    linked = {"update_id": 1, "message": {"chat": {"type": "private", "id": 42}, "text": start, "date": 0}}
    daemon.request("POST", "/hooks/telegram", json.dumps(linked).encode(), headers)


SITE_CALLS = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from(["0123456789abcdef0123456789abcdef", "x"]) | JSON,
        "id": st.sampled_from(["fedcba9876543210fedcba9876543210"]) | JSON,
        "type": st.sampled_from(["product.viewed", "cart.updated", "identify", "site.active", "x"]) | JSON,
        "data": JSON,
        "email": st.sampled_from(["anna@example.com", "\u212aate@example.com"]) | JSON,
        "token": st.sampled_from([seal(SECRET, "site", "c-1"), seal(SECRET, "push", "c-1")]) | JSON,
    },
)


@pytest.mark.slow
@fuzzing(80)
@given(call=SITE_CALLS, content_type=st.sampled_from(["text/plain", "application/json"]) | HEADER_VALUES)
def test_site_tracking_calls_from_the_shop_are_answered_below_500(
    daemon: Daemon, call: dict[str, Any], content_type: str
) -> None:
    """`POST /t` past the origin check: call-shaped JSON with any values, any content type."""
    daemon.request("POST", "/t", json.dumps(call).encode(), {"Origin": SHOP, "Content-Type": content_type})


@pytest.mark.slow
@fuzzing(60)
@given(
    channel=st.sampled_from(["sms", "whatsapp"]),
    message=TOKEN_VALUES,
    form=st.dictionaries(
        st.sampled_from(["MessageStatus", "SmsStatus", "ErrorCode", "MessageSid"]) | SAFE_TEXT,
        st.sampled_from(["delivered", "read", "failed", "undelivered", "sent", "21610", "30006"]) | SAFE_TEXT,
        max_size=4,
    ),
    real_message=st.booleans(),
)
def test_signed_twilio_callbacks_with_any_form_are_answered_below_500(
    daemon: Daemon, channel: str, message: str, form: dict[str, str], real_message: bool
) -> None:
    """Status callbacks signed as Twilio signs them, about any message, with any form."""
    path = f"/callbacks/{channel}?m={quote(daemon.message_id if real_message else message, safe='')}"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{daemon.public_url}{path}", form)
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    daemon.request("POST", path, urlencode(form).encode(), headers)


@pytest.mark.slow
@fuzzing(60)
@given(
    value=TOKEN_VALUES,
    index=st.integers(-3, 5).map(str) | SAFE_TEXT,
    real_message=st.booleans(),
    form=st.lists(
        st.tuples(st.sampled_from(["channel", "List-Unsubscribe"]) | SAFE_TEXT, SAFE_TEXT), max_size=4
    ),
)
def test_signed_tracking_links_for_any_value_are_answered_below_500(
    daemon: Daemon, value: str, index: str, real_message: bool, form: list[tuple[str, str]]
) -> None:
    """`/o`, `/c` and `/u` with validly signed tokens for a sent message or any value."""
    message = daemon.message_id if real_message else value
    daemon.request("GET", f"/o/{sign(SECRET, 'open', message)}")
    daemon.request("GET", f"/c/{sign(SECRET, 'click', f'{message}:{index}')}")
    unsubscribe = f"/u/{sign(SECRET, 'unsubscribe', message)}"
    daemon.request("GET", unsubscribe)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    daemon.request("POST", unsubscribe, urlencode(form).encode(), headers)


@pytest.mark.slow
def test_a_click_token_whose_link_index_is_a_superscript_digit_is_not_found(daemon: Daemon) -> None:
    """Found by the fuzzer: `"²".isdigit()` is true and `int("²")` raises, which answered 500."""
    status, _ = daemon.request("GET", f"/c/{sign(SECRET, 'click', f'{daemon.message_id}:²')}")
    assert status == 404


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "headers", "refused"),
    [
        ("/hooks/telegram", {"X-Telegram-Bot-Api-Secret-Token": "\x80"}, 403),  # found by the fuzzer
        ("/events", {"Authorization": "Bearer \x80"}, 401),
        ("/push/subscribe", {"Authorization": "Bearer \x80"}, 403),
        ("/push/click", {"Authorization": "Bearer eA.\x80"}, 403),
    ],
    ids=["telegram-secret", "api-token", "push-token", "click-token"],
)
def test_a_credential_that_is_not_utf_8_is_refused(
    daemon: Daemon, path: str, headers: dict, refused: int
) -> None:
    """A header byte that is not UTF-8 (0x80) reaches the handler as a lone surrogate, which
    `str.encode()` refuses: comparing it with the secret answered 500."""
    assert daemon.request("POST", path, b"{}", headers)[0] == refused


# the loaders and the renderer

YAML_PIECES = st.sampled_from(
    [
        "scenario: s\n",
        "trigger: {event: cart.updated}\n",
        "steps:\n",
        "  - wait: 20m\n",
        "  - send: hello\n",
        "  - if: cart.total > 10\n",
        "    then: [{send: hello}]\n",
        "  - exit_on: order.placed\n",
        "category: promo\n",
        "&a [1, 2]\n",
        "*a\n",
        "<<: *a\n",
        "- ",
        ": ",
        "{",
        "}",
        "[",
        "]",
        "!!python/object:os.system\n",
        "%TAG ! tag:x\n",
        "---\n",
        "'",
        '"',
        "\t",
        "\n",
        "database: ./x.db\n",
        "listen: {port: 99999}\n",
        "channels: {email: {host: h, from: a@b.c}}\n",
        "contact_plan: {quiet_hours: 22-08}\n",
        "${X}",
        "${X:-1}",
    ]
)
YAML_TEXT = st.lists(YAML_PIECES | SAFE_TEXT, max_size=12).map("".join)


@fuzzing(120)
@given(text=YAML_TEXT)
def test_a_scenario_file_is_compiled_or_its_problems_have_positions(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8")
    _, problems = compile_scenario(path)
    assert all(p.file == str(path) and p.line >= 1 and p.col >= 1 and p.message for p in problems)


@fuzzing(120)
@given(text=YAML_TEXT)
def test_a_config_file_is_loaded_or_its_problems_have_positions(tmp_path: Path, text: str) -> None:
    path = tmp_path / "boomerang.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path, environ={})
    except ProblemError as exc:
        assert exc.problems and all(p.line >= 1 and p.col >= 1 and p.message for p in exc.problems)


TEMPLATE_PIECES = st.sampled_from(
    [
        "{{ ",
        " }}",
        "{% ",
        " %}",
        "{# ",
        " #}",
        "customer.name",
        "cart['items']",
        " | upper",
        " | join(', ')",
        " | tojson",
        " | format_money",
        "if cart.total > 1",
        "endif",
        "for item in cart.items",
        "endfor",
        "range(100000000)",
        "'x' * 1000000000",
        "().__class__.__mro__",
        "1 / 0",
        "lipsum(10)",
        '<a href="https://shop.example/">',
        "---\n",
        "subject: ",
        "\n",
    ]
)
TEMPLATE_TEXT = st.lists(TEMPLATE_PIECES | SAFE_TEXT, max_size=14).map("".join)
# The runtime errors a template can meet with a customer's data (the sandbox's refusals, its
# budget, Jinja's own errors, and Python's for a wrong operation on a value).
RENDER_ERRORS = (
    TemplateError,
    RenderLimitExceeded,
    SecurityError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
)
CONTEXT = {
    "customer": {"id": "c-1", "name": "Anna", "email": "anna@example.com"},
    "cart": {"total": 12.5, "items": [{"name": "Bicycle", "price": 79.9}]},
    "event": {"type": "cart.updated"},
}


@fuzzing(120)
@given(text=TEMPLATE_TEXT)
def test_a_template_loads_with_positions_and_renders_or_says_why_not(tmp_path: Path, text: str) -> None:
    folder = tmp_path / "templates" / "fuzzed"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "email.en.html").write_text(text, encoding="utf-8")
    library, problems = load_templates(tmp_path / "templates", None, {"email": EmailChannel})
    assert all(p.line >= 1 and p.col >= 1 and p.message for p in problems)
    template = library.get("fuzzed")
    if template is None:
        assert problems
        return
    try:
        rendered = template.render("email", ["en"], CONTEXT)
    except RENDER_ERRORS as exc:  # what a send reports as "cannot render: <message>"
        assert str(exc), f"{type(exc).__name__} without a message"
    else:
        assert isinstance(rendered.body, str)


def laughs(levels: int, width: int = 9) -> str:
    """The "billion laughs": each level a list of `width` aliases of the level below."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text",
    [
        laughs(9),  # 9^9 (387 million) values once expanded
        laughs(30, 2),  # 2^30 values
        "big: &big [" + ", ".join(["x"] * 2000) + "]\nmany: [" + ", ".join(["*big"] * 100) + "]\n",
    ],
    ids=["billion-laughs", "deep-doubling", "oversized-anchor"],
)
def test_yaml_aliases_that_expand_too_far_are_refused_quickly(tmp_path: Path, text: str) -> None:
    started = time.monotonic()
    for load in (
        lambda path: parse_yaml(path.read_text(), str(path)),
        lambda path: load_config(path, environ={}),
    ):
        path = tmp_path / "laughs.yaml"
        path.write_text(text)
        with pytest.raises(ProblemError) as raised:
            load(path)
        [problem] = raised.value.problems
        assert "billion laughs" in problem.message and f"{MAX_EXPANDED_NODES:,}" in problem.message
        assert problem.line > 1  # at the node that grew too big
    scenario = tmp_path / "laughs-scenario.yaml"
    scenario.write_text(text)
    assert "billion laughs" in compile_scenario(scenario)[1][0].message
    assert time.monotonic() - started < 30  # generous: in practice milliseconds; hung for ever before


def test_an_anchor_that_contains_itself_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProblemError, match="an alias refers to a node that contains it"):
        parse_yaml("&a [1, *a]\n", "self.yaml")


def test_nesting_deeper_than_the_parser_can_go_is_a_problem_found_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(ProblemError) as raised:
        parse_yaml("a:\n  b: " + "[" * 50_000 + "]" * 50_000, "deep.yaml")
    assert str(raised.value) == (
        "deep.yaml:2:106: error: invalid YAML: [ ] and { } nested more than 100 levels deep"
    )
    indented = "".join(f"{' ' * level}k{level}:\n" for level in range(2000)) + " " * 2000 + "v\n"
    with pytest.raises(ProblemError, match="nested too deeply"):
        parse_yaml(indented, "indented.yaml")
    assert time.monotonic() - started < 30  # generous: a second or two; a minute before the guard


def test_aliases_a_real_file_uses_still_load() -> None:
    data = parse_yaml("defaults: &d {wait: 20m}\nfirst: {<<: *d, send: a}\nsecond: [*d, *d]\n", "ok.yaml")
    assert data["first"]["wait"] == "20m" and data["second"][1]["wait"] == "20m"


@pytest.mark.slow
def test_the_fuzzed_daemon_is_the_real_process(daemon: Daemon) -> None:
    """The module's daemon answers /healthz (and the fixture checks its log for tracebacks)."""
    status, body = daemon.request("GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
