"""Issue 9, section 1: templates and expressions see data, not objects, within a budget.

Every payload below is a known way out of a Jinja2 sandbox, or an object the render context
used to hold (`history` reached the store, its file and its connection). `boomerang check`
must refuse each at its `file:line` in a template body, a front matter value, a scenario
`if:` and a `set:` value; forced past `check`, the real daemon must send no internals, run
no SQL and write no file. A slow template must fail its message, not stall the daemon.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import textwrap
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from jinja2 import Undefined
from jinja2.exceptions import SecurityError

from boomerang import expressions
from boomerang import project as project_module
from boomerang.cli import cli
from boomerang.daemon import Daemon, StartupError
from boomerang.ingest import parse_events
from boomerang.plugins.conditions.builtin import register_conditions
from boomerang.simulation import simulate
from boomerang.store.postgresql import PostgresDatabase
from conftest import (
    API_TOKEN,
    AUTH,
    BOOMERANG,
    SECRET,
    daemon_process,
    project_database,
    running,
    url,
    wait_for,
)

ESCAPES = [
    "history.store.path.with_name('boomerang.yaml').read_text()",
    "history.store.path.with_name('plugins').joinpath('dropped.py').write_text('import os')",
    "history.store.db.execute('CREATE TABLE pwned (x)')",
    "segments.vip.source",
    "cart.__class__.__mro__[1].__subclasses__()",
    "''.__class__.__mro__[1].__subclasses__()",
    "days_since.__globals__['os'].environ",
    "bought_category.__globals__",
    "lipsum.__globals__['os'].popen('id').read()",
    "lipsum.__globals__.__builtins__.open('/proc/self/environ').read()",
    "cycler.__init__.__globals__.os.environ",
    "joiner.__init__.__globals__",
    "namespace.__init__.__globals__",
    "range.__call__.__globals__",
    "self._TemplateReference__context",
    "self.__init__.__globals__",
    "'{0.__class__.__init__.__globals__}'.format(days_since)",
    "'{0.__class__}'.format(cart)",
    "'{x.__class__}'.format_map({'x': cart})",
    "cart|attr('__class__')",
    "days_since|attr('__globals__')",
    "cart['__class__']['__mro__']",
    "now.__class__.__subclasses__()",
    "customer.__class__.__base__.__subclasses__()",
    "dict.mro()",
]
# Payloads that need a statement around them: template bodies only.
STATEMENT_ESCAPES = [
    "{% for x in [1] %}{{ loop._iterator }}{% endfor %}",
    "{% for x in [1] %}{{ loop.__class__.__init__.__globals__ }}{% endfor %}",
    "{% set ns = namespace(a=1) %}{{ ns.__dict__ }}",
    "{% macro m() %}{% endmacro %}{{ m._func.__globals__ }}",
    "{% for x in [1] %}{{ x|attr('__class__') }}{% endfor %}",
    "{{ days_since }}",
]
# Each would print an object's repr; `check` cannot see what most of them are: the render must not.
PRINTED_OBJECTS = [
    "{{ days_since }}",
    "{{ dict }}{{ range }}{{ namespace }}",
    "{{ 'abc'.upper }}",
    "{{ [days_since, dict]|join(',') }}",
    "{{ '%s'|format(bought_category) }}",
    "{{ '%s' % in_segment }}",
    "{{ days_since|string }}",
    "{{ viewed_products ~ '' }}",
    "{{ cart.keys }}{{ cart.items }}{{ customer.get }}",
    "{{ now.tzinfo }}",
    "{% for x in [1] %}{{ loop }}{{ loop.cycle }}{% endfor %}",
    "{% macro m() %}{% endmacro %}{{ m }}",
]
# What no message may contain: the config's secrets and text, paths, Python reprs.
LEAKS = (SECRET, API_TOKEN, "api_token", "secret:", "<class", "<function", "<module", "<built-in", "uid=")
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): error: (?P<text>.+)$")
SLOW = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}done"
# Templates that would take seconds, or build megabytes, and the reason each message fails with.
# (Kept small enough that the code before the budget finished them, and sent them.)
EXPENSIVE = {
    "{% for a in range(20000) %}{% for b in range(20000) %}{% endfor %}{% endfor %}": "took longer than",
    "{% set a = 'x' * 20000 %}{% macro m() %}{% for i in range(1000) %}{{ a }}{% endfor %}{% endmacro %}"
    "{{ m()|length }}": "wrote more than",
    "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = ns.l + ['x' * 1000] %}"
    "{% endfor %}{{ ns.l }}": "the text would be",
    "{{ 'x'|center(10**7) }}": "the padding",
    "{{ 'x'|indent(10**7, true) }}": "the padding",
    "{{ ('%0' ~ 10**7 ~ 'd')|format(1) }}": "a format width of 10000000",
    "{{ '%*d' % (10**7, 1) }}": "a format width of *",
    "{{ range(10**8)|list }}": "range() would be 100000000 items",
    "{{ ('x' * 1000)|list|join('y' * 1000) }}": "the joined text",
    "{{ ('x' * 200000)|replace('x', 'yy') }}": "the replaced text",
    "{{ ('x' * 200000).replace('x', 'yy') }}": "the replaced text",
    "{{ cart.total ** (10 ** 6) }}": "a power would be",
    "{{ [cart] * 10**6 }}": "a repetition would be",
    "{{ [1]|batch(10**7, 0)|list }}": "the count would be",
    "{{ cart|tojson(indent=10**6) }}": "tojson indent",
    "{{ ('a b ' * 1000)|wordwrap(1, wrapstring='x' * 1000) }}": "the wrapped text",
    "{{ ('http://a.b ' * 300)|urlize(target='x' * 1000) }}": "the linked text",
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def only_our_scenarios(project: Path) -> None:
    """The reference scenarios would send too; these tests look at their own messages only."""
    for scenario in (project / "scenarios").glob("*.yaml"):
        scenario.unlink()
    config = project / "boomerang.yaml"
    config.write_text(config.read_text() + "segments:\n  vip: customer.orders_count >= 5\n")


def errors_by_file(output: str) -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = {}
    for line in output.splitlines():
        match = LINE.match(line)
        if match:
            found.setdefault(match["file"], []).append((int(match["line"]), match["text"]))
    return found


def test_check_refuses_every_escape_at_its_line(project: Path) -> None:
    """Each payload in a template body, a front matter value, an `if:` and a `set:` value is an
    error at its own line; the reference scenarios and templates stay free of errors."""
    only_our_scenarios(project)
    expected: dict[str, int] = {}
    for n, payload in enumerate(ESCAPES):
        body = write(
            project / "templates" / f"body_{n}" / "email.en.html",
            f"---\nsubject: Hi\n---\n<p>Hello</p>\n<p>{{{{ {payload} }}}}</p>\n",
        )
        expected[str(body)] = 5
        front = write(
            project / "templates" / f"front_{n}" / "email.en.html",
            f'---\nsubject: Hi\npreheader: "{{{{ {payload} }}}}"\n---\n<p>Hello</p>\n',
        )
        expected[str(front)] = 3
        scenario = f"""\
            scenario: if-{n}
            trigger: {{event: cart.updated}}
            steps:
              - wait: 1h
              - if: "{payload}"
                then:
                  - stop
            """
        expected[str(write(project / "scenarios" / f"if_{n}.yaml", textwrap.dedent(scenario)))] = 5
        scenario = f"""\
            scenario: set-{n}
            trigger: {{event: cart.updated}}
            steps:
              - set:
                  note: "{{{{ {payload} }}}}"
            """
        expected[str(write(project / "scenarios" / f"set_{n}.yaml", textwrap.dedent(scenario)))] = 5
    for n, payload in enumerate(STATEMENT_ESCAPES):
        body = write(project / "templates" / f"statement_{n}" / "sms.en.txt", f"Hello\n{payload}\n")
        expected[str(body)] = 2

    result = CliRunner().invoke(cli, ["check", "--config", str(project / "boomerang.yaml")])

    assert result.exit_code == 1
    found = errors_by_file(result.stdout)
    for file, line in expected.items():
        assert [at for at, _ in found.get(file, [])] == [line], (file, found.get(file), result.stdout)
    # The reference templates, which use the functions and the data, are all still fine.
    assert set(found) == set(expected)


# the database's tables, on SQLite and on PostgreSQL (the project's schema)
TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table'",
    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
)


async def test_forced_past_check_no_internals_are_sent(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With check's refusals switched off, the payloads reach the real engine: the daemon renders
    them on its render thread, runs the `if:` on its store thread, and writes to the outbox."""
    monkeypatch.setattr(expressions, "refusals", lambda source, environment: [], raising=False)
    # check's other gate for these payloads: `history`, `lipsum`... are names no place can get
    monkeypatch.setattr(project_module, "unknown_names", lambda scenario, templates, environment: [])
    only_our_scenarios(project)
    # The attr filter does not exist at all, so there is nothing to force past check there.
    escapes = [payload for payload in ESCAPES if "|attr(" not in payload]
    statements = [payload for payload in STATEMENT_ESCAPES if "|attr(" not in payload]
    payloads = [f"{{{{ {payload} }}}}" for payload in escapes] + statements + PRINTED_OBJECTS
    for n, payload in enumerate(payloads):
        subject = payload if payload in PRINTED_OBJECTS or n < len(escapes) else "Hi"
        write(
            project / "templates" / f"t_{n}" / "email.en.html",
            f'---\nsubject: "{subject}"\n---\n<p>Hello {n}</p>\n{payload}\n',
        )
        condition = escapes[n] if n < len(escapes) else "true"
        scenario = f"""\
            scenario: s-{n}
            category: transactional
            trigger: {{event: cart.updated}}
            steps:
              - if: "{condition}"
                then:
                  - send: t_{n}
                else:
                  - send: t_{n}
            """
        write(project / "scenarios" / f"s_{n}.yaml", textwrap.dedent(scenario))
    cart = {
        "id": "e-1",
        "type": "cart.updated",
        "at": "2026-03-02T10:00:00Z",
        "customer": {"id": "c-42", "email": "anna@example.com", "name": "Anna"},
        "data": {"cart": {"total": 80, "items": [{"name": "Bicycle", "price": 80}]}},
    }
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        async with session.post(url(daemon, "/events"), json=cart, headers=AUTH) as response:
            assert response.status == 200

        def all_settled() -> list:
            with project_database(project) as db:
                settled = db.execute(
                    "SELECT status, detail FROM messages WHERE status != 'pending'"
                ).fetchall()
            done = len(settled) == len(payloads) and all(status != "sending" for status, _ in settled)
            return settled if done else []

        settled = await wait_for(all_settled, 30, "every message to be settled")

    sent = [file.read_text(encoding="utf-8") for file in (project / "outbox").glob("*-email-*.eml")]
    assert sent, "the harmless part of the payloads is sent"
    for text in sent:
        for leak in (*LEAKS, str(project)):
            assert leak not in text, (leak, text)
    for status, detail in settled:
        assert status == "sent" or (status == "dropped" and "cannot render" in detail), (status, detail)
    with project_database(project) as db:
        tables = {name for (name,) in db.execute(TABLES[isinstance(db, PostgresDatabase)])}
        assert "pwned" not in tables
        assert db.execute("SELECT count(*) FROM customers").fetchone() == (1,)
    assert not (project / "plugins" / "dropped.py").exists()


async def test_the_context_holds_plain_data_only(project: Path) -> None:
    """No value in what a template sees can lead, by any attribute, to the store or a path."""
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        cart = {
            "id": "e-1",
            "type": "order.placed",
            "at": "2026-03-02T10:00:00Z",
            "customer": {"id": "c-42", "email": "anna@example.com", "birthday": "1990-03-04"},
            "data": {"order": {"total": 80, "items": [{"name": "Bicycle", "category": "bicycles"}]}},
        }
        async with session.post(url(daemon, "/events"), json=cart, headers=AUTH) as response:
            assert response.status == 200
        customer = await daemon.store.run(daemon.store.customer, "c-42")
        assert customer is not None
        # The engine acts on stored events after the answer, once ingest pauses.
        journeys = await wait_for(
            lambda: daemon.store.run(daemon.store.journeys_of, "c-42"), what="the order's journey"
        )
        journey = journeys[0]
        context = daemon.engine.context(customer, journey, datetime.now(UTC))

    plain = (str, int, float, type(None), datetime, date)
    stack: list[Any] = [context]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            assert all(isinstance(key, str) for key in value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        else:
            assert isinstance(value, plain), (type(value), value)
    assert dataclasses.asdict(customer) == context["customer"]

    # Every attribute of every value, and of every function, as the sandbox hands it out,
    # three steps deep: data, or a harmless method of text or a datetime, never an object.
    environment = daemon.project.environment
    frontier: list[Any] = [*context.values(), *environment.globals.values()]
    for _ in range(3):
        following = []
        for value in frontier:
            if isinstance(value, dict):
                following.extend(value.values())
            elif isinstance(value, list):
                following.extend(value)
            for name in dir(value):
                try:
                    reached = environment.getattr(value, name)
                except SecurityError:
                    continue
                if isinstance(reached, Undefined):
                    continue
                if callable(reached) and not isinstance(reached, expressions.Function):
                    owner = getattr(reached, "__self__", None)
                    assert isinstance(owner, str | datetime | date | list), (value, name, reached)
                else:
                    assert isinstance(reached, (*plain, dict, list, expressions.Function)), (value, name)
                following.append(reached)
        frontier = following


async def test_expensive_templates_fail_their_message_within_the_budget(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through `simulate`, the engine's own path: each message fails with its reason, fast.
    (Forced past check, which already refuses those made of constants only.)"""
    monkeypatch.setattr(expressions, "refusals", lambda source, environment: [], raising=False)
    only_our_scenarios(project)
    for n, body in enumerate(EXPENSIVE):
        write(project / "templates" / f"t_{n}" / "email.en.html", f"---\nsubject: Hi\n---\n{body}\n")
        scenario = f"scenario: s-{n}\ncategory: transactional\ntrigger: {{event: cart.updated}}\nsteps:\n"
        write(project / "scenarios" / f"s_{n}.yaml", scenario + f"  - send: t_{n}\n")
    cart = {
        "id": "e-1",
        "type": "cart.updated",
        "at": "2026-03-02T10:00:00Z",
        "customer": {"id": "c-42", "email": "anna@example.com"},
        "data": {"cart": {"total": 80, "items": [{"name": "Bicycle", "price": 80}]}},
    }
    started = time.monotonic()
    timeline = await simulate(project / "boomerang.yaml", parse_events([("event 1", cart)]))

    assert time.monotonic() - started < 15
    outcomes = {entry.template: entry for entry in timeline.entries if entry.kind in ("send", "drop")}
    for n, reason in enumerate(EXPENSIVE.values()):
        entry = outcomes[f"t_{n}"]
        assert entry.kind == "drop" and entry.reason.startswith("email: cannot render: "), entry
        assert reason in entry.reason, (reason, entry.reason)


async def test_two_messages_rendered_at_once_still_respect_a_cap(project: Path) -> None:
    """Rendering happens between the decision and its record: the record decides again, so two
    promos for one customer rendered side by side do not both pass a cap of one a day."""
    only_our_scenarios(project)
    config = project / "boomerang.yaml"
    plan = "contact_plan:\n  default_timezone: Europe/Moscow\n"
    assert plan in config.read_text()
    caps = "  caps:\n    - {categories: [promo], max: 1, per: 1d}\n"
    config.write_text(config.read_text().replace(plan, plan + caps))
    for name in ("first", "second"):
        body = "{% for i in range(20000) %}{% endfor %}" + name
        write(project / "templates" / name / "email.en.html", f"---\nsubject: {name}\n---\n{body}\n")
        scenario = (
            f"scenario: {name}\ncategory: promo\ntrigger: {{event: cart.updated}}\nsteps:\n  - send: {name}\n"
        )
        write(project / "scenarios" / f"{name}.yaml", scenario)
    cart = {
        "id": "e-1",
        "type": "cart.updated",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "customer": {"id": "c-42", "email": "anna@example.com"},
        "data": {},
    }
    async with running(project) as daemon, aiohttp.ClientSession() as session:
        async with session.post(url(daemon, "/events"), json=cart, headers=AUTH) as response:
            assert response.status == 200

        def one_sent_one_capped() -> bool:
            with project_database(project) as db:
                statuses = sorted(db.execute("SELECT status, detail FROM messages").fetchall())
            held = statuses[0][1] if statuses else None
            return [status for status, _ in statuses] == ["pending", "sent"] and "cap" in (held or "")

        await wait_for(one_sent_one_capped, 20, "one message sent and one held back by the cap")
        # a sleep on purpose: no condition tells that nothing more will go out, so give it time to
        await asyncio.sleep(0.5)
    assert len(list((project / "outbox").glob("*-email-*.eml"))) == 1


async def test_expressions_and_set_values_have_the_shorter_budget(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An `if:` and a `set:` value run on the store's thread: over 0.1 s the value is not set
    and the condition is false, and the journey goes on."""
    only_our_scenarios(project)
    write(project / "templates" / "then" / "email.en.html", "---\nsubject: Then\n---\nthen\n")
    write(project / "templates" / "else" / "email.en.html", "---\nsubject: Else\n---\nelse\n")
    loops = "{% for a in range(20000) %}{% for b in range(20000) %}{% endfor %}{% endfor %}"
    scenario = f"""\
        scenario: slow-values
        category: transactional
        trigger: {{event: cart.updated}}
        steps:
          - set:
              note: "{loops}slow"
          - if: "range(100000) | map('string') | map('upper') | join | length > 0"
            then:
              - send: then
            else:
              - send: else
        """
    write(project / "scenarios" / "slow_values.yaml", textwrap.dedent(scenario))
    cart = {
        "id": "e-1",
        "type": "cart.updated",
        "at": "2026-03-02T10:00:00Z",
        "customer": {"id": "c-42", "email": "anna@example.com"},
        "data": {},
    }
    started = time.monotonic()
    timeline = await simulate(project / "boomerang.yaml", parse_events([("event 1", cart)]))

    assert time.monotonic() - started < 5
    outcomes = [
        (entry.kind, entry.template, entry.reason) for entry in timeline.entries if entry.kind != "enter"
    ]
    assert outcomes[0] == (
        "drop",
        None,
        "set not done: cannot render its values: it took longer than its budget of 0.1 s",
    )
    assert "stopped: it took longer than its budget of 0.1 s" in caplog.text
    # The journey ends at once; its message goes when the send job runs.
    assert [(kind, template) for kind, template, _ in outcomes[1:]] == [("exit", None), ("send", "else")]


def test_everyday_templates_still_render() -> None:
    """What marketers write keeps working inside the walls."""
    environment = expressions.make_environment(register_conditions())
    template = environment.from_string(
        "{% set ns = namespace(total=0) %}"
        "{% for item in cart.items %}{{ item.name|upper }}{{ ', ' if not loop.last }}"
        "{% set ns.total = ns.total + item.price %}{% endfor %}; "
        "{% for group in cart.items|groupby('category') %}"
        "{{ group.grouper }}={{ group.list|length }} {% endfor %}"
        "{{ '%.2f'|format(ns.total) }} {{ now.strftime('%Y-%m-%d') }} {{ days_since('2026-02-28') }} "
        "{{ 'a-b'.split('-')|join('+') }} {{ (customer.name ~ '!')|replace('!', '?') }} "
        "{{ cart|dictsort|map('first')|join(',') }} {{ range(3)|list }} {{ dict(a=1).a }}"
    )
    context = {
        "cart": {
            "items": [
                {"name": "Bike", "price": 80, "category": "b"},
                {"name": "Bell", "price": 5, "category": "a"},
            ]
        },
        "customer": {"name": "Ann"},
        "now": datetime(2026, 3, 2, 10, tzinfo=UTC),
    }
    with expressions.evaluating(expressions.Scope()):
        text = expressions.render(template, context)
    assert text == "BIKE, BELL; a=1 b=1 85.00 2026-03-02 2 a+b Ann? items [0, 1, 2] 1"


def test_a_huge_constant_is_refused_by_check_without_being_built(project: Path) -> None:
    file = write(
        project / "templates" / "huge" / "email.en.html", "---\nsubject: Hi\n---\n<p>{{ 'x' * 10**8 }}</p>\n"
    )
    wide = write(project / "templates" / "wide" / "sms.en.txt", "Hi\n{{ 'x' | center(10**8) }}\n")
    trigger = "trigger: {event: cart.updated, if: \"('x' * 10 ** 8) | length > 0\"}"
    scenario = f"scenario: huge\n{trigger}\nsteps:\n  - stop\n"
    write(project / "scenarios" / "huge.yaml", scenario)
    started = time.monotonic()
    result = subprocess.run(
        [BOOMERANG, "check", "--config", str(project / "boomerang.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert time.monotonic() - started < 20
    assert result.returncode == 1
    assert f"{file}:4:1: error: refused: this would be refused when rendered: a repetition" in result.stdout
    assert f"{wide}:2:1: error: refused: this would be refused when rendered: the padding" in result.stdout
    refused = re.search(r"huge\.yaml:2:\d+: error: refused expression .*a repetition", result.stdout)
    assert refused, result.stdout


async def test_start_and_reload_refuse_a_huge_constant_at_once(project: Path) -> None:
    template = project / "templates" / "cart_reminder" / "email.en.html"
    original = template.read_text(encoding="utf-8")
    async with running(project) as daemon:
        template.write_text(original + "{{ 'x' * 10**8 }}\n", encoding="utf-8")
        started = time.monotonic()
        assert await daemon.reload() is False
        assert time.monotonic() - started < 5
    started = time.monotonic()
    with pytest.raises(StartupError, match="repetition"):
        await Daemon(project / "boomerang.yaml").start()
    assert time.monotonic() - started < 5


@pytest.mark.slow
async def test_a_slow_template_fails_its_message_and_the_daemon_stays_responsive(
    project: Path, tmp_path: Path
) -> None:
    """Against the real `boomerang run`: while a message with a never-ending loop renders,
    /healthz and POST /events keep answering; the message fails when its budget is spent."""
    only_our_scenarios(project)
    write(
        project / "scenarios" / "slow.yaml",
        "scenario: slow\ntrigger: {event: cart.updated}\nsteps:\n  - send: slow\n",
    )
    write(project / "templates" / "slow" / "email.en.html", f"---\nsubject: Slow\n---\n{SLOW}\n")
    base = f"http://127.0.0.1:{os.environ['BOOMERANG_PORT']}"
    cart = {
        "id": "e-slow",
        "type": "cart.updated",
        "at": "2026-03-02T10:00:00Z",
        "customer": {"id": "c-1", "email": "anna@example.com"},
        "data": {},
    }
    latencies: list[float] = []
    async with (
        daemon_process(project, tmp_path / "daemon.log"),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
    ):
        async with session.post(f"{base}/events", json=cart, headers=AUTH) as response:
            assert response.status == 200
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < 0.8:  # the render's budget is 1 s
            before = time.monotonic()
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            latencies.append(time.monotonic() - before)
            view = {**cart, "id": f"v-{n}", "type": "product.viewed", "customer": {"id": f"c-{n + 2}"}}
            before = time.monotonic()
            async with session.post(f"{base}/events", json=view, headers=AUTH) as response:
                assert response.status == 200
            latencies.append(time.monotonic() - before)
            n += 1

        def dropped() -> dict | None:
            result = CliRunner().invoke(
                cli, ["explain", "--config", str(project / "boomerang.yaml"), "c-1", "--json"]
            )
            timeline = json.loads(result.stdout)["timeline"] if result.exit_code == 0 else []
            return next((row for row in timeline if row["kind"] == "drop"), None)

        drop = await wait_for(dropped, 20 - (time.monotonic() - started), "the slow message to be settled")

    # A daemon that rendered on its loop or store thread would hold a request for the rest of the
    # 1 s budget. The bound is that, with room for a busy machine, not a speed goal (answers take
    # a few ms when the machine is quiet).
    assert len(latencies) >= 10 and max(latencies) < 0.5, latencies
    assert drop["template"] == "slow" and drop["channel"] == "email"
    assert drop["reason"] == "email: cannot render: it took longer than its budget of 1 s"
    assert "cannot render: it took longer than its budget of 1 s" in (tmp_path / "daemon.log").read_text()
    assert not list((project / "outbox").glob("*-email-*.eml"))


def test_a_budget_counts_the_cpu_time_spent_not_the_wait_for_a_busy_machine() -> None:
    budget = expressions.Budget(0.05)
    time.sleep(0.1)  # as a thread waiting for a core would: no CPU time spent
    budget.tick()  # within budget: an audience's answer does not depend on the machine's load
    with pytest.raises(expressions.RenderLimitExceeded, match=r"budget of 0\.05 s"):
        while True:  # spending it does run out
            budget.tick()
