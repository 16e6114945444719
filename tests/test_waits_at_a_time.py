"""Waits that end at a time of day on the customer's clock: `{until_time: "10:00"}` and
`{for: 1d, at: "10:00"}`, optionally on `days:`; how a scenario declares them (and every
mistake, at its position) and what `simulate` does with customers in several timezones."""

from __future__ import annotations

import textwrap
from datetime import time, timedelta
from pathlib import Path

import pytest

from boomerang.scenarios import compile_scenario
from boomerang.simulation import simulate
from conftest import incoming, t

WAITS = """\
scenario: s
trigger: {event: order.placed}
steps:
  - wait: {until_time: "10:00"}
  - wait: {for: 1d, at: "9:30", days: [mon, tue, wednesday, Thu, fri]}
    until_idle: 20m
  - wait: {until_time: "23:59", days: [sun]}
  - wait: 2h
  - wait: {for: 3d, until: order.delivered}
"""


def compile_text(tmp_path: Path, text: str):
    path = tmp_path / "scenario.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    scenario, problems = compile_scenario(path)
    return scenario, [(p.line, p.col, p.severity, p.message) for p in problems]


def test_the_forms_of_a_wait(tmp_path: Path) -> None:
    scenario, problems = compile_text(tmp_path, WAITS)
    assert problems == []
    assert scenario is not None
    steps = [scenario.index[str(n)] for n in range(5)]
    assert [(s.kind, s.duration, s.at, s.weekdays) for s in steps] == [
        ("wait", timedelta(0), time(10, 0), None),
        ("wait", timedelta(days=1), time(9, 30), frozenset({0, 1, 2, 3, 4})),
        ("wait", timedelta(0), time(23, 59), frozenset({6})),
        ("wait", timedelta(hours=2), None, None),
        ("wait_for", timedelta(days=3), None, None),
    ]
    assert steps[1].until_idle == timedelta(minutes=20)


FORMS = '2h, {for: 3d, until: <event type>}, {until_time: "10:00"} or {for: 1d, at: "10:00"}'
PROBLEMS = {
    "a-bad-time": (
        '  - wait: {until_time: "25:00"}',
        [(4, 24, "error", "'25:00' is not a time of day such as \"10:00\"")],
    ),
    "a-time-with-seconds": (
        '  - wait: {for: 1d, at: "10:00:00"}',
        [(4, 25, "error", "'10:00:00' is not a time of day such as \"10:00\"")],
    ),
    "an-unknown-day": (
        '  - wait: {until_time: "10:00", days: [mon, tuseday, weekend]}',
        [
            (
                4,
                45,
                "error",
                "'tuseday' is not a day of the week (did you mean 'tuesday'?); "
                "write mon, tue, wed, thu, fri, sat, sun",
            ),
            (4, 54, "error", "'weekend' is not a day of the week; write mon, tue, wed, thu, fri, sat, sun"),
        ],
    ),
    "days-not-a-list": (
        '  - wait: {until_time: "10:00", days: mon}',
        [(4, 39, "error", "days is a list of days of the week such as [mon, fri]")],
    ),
    "at-without-for": (
        '  - wait: {at: "10:00"}',
        [
            (
                4,
                12,
                "error",
                "'at' needs 'for': {for: 1d, at: \"10:00\"} waits at least a day, then until "
                '10:00; to wait only until a time of day, write {until_time: "10:00"}',
            ),
        ],
    ),
    "until-time-with-for": (
        '  - wait: {for: 1d, until_time: "10:00"}',
        [
            (
                4,
                12,
                "error",
                "'for' does not go with 'until_time'; to wait at least a while and then until "
                'a time of day, write {for: 1d, at: "10:00"}',
            ),
        ],
    ),
    "a-time-on-a-wait-for-an-event": (
        '  - wait: {for: 3d, until: order.delivered, at: "10:00"}',
        [(4, 45, "error", f"'at' does not go with 'until' (a wait for an event); a wait is {FORMS}")],
    ),
    "days-alone": (
        "  - wait: {days: [mon]}",
        [(4, 11, "error", f"a wait is {FORMS}")],
    ),
    "a-misspelt-key": (
        '  - wait: {until_tme: "10:00"}',
        [
            (
                4,
                12,
                "error",
                "unknown key 'until_tme' in wait (did you mean 'until_time'?); "
                "expected one of: for, until, until_time, at, days",
            ),
        ],
    ),
    "a-single-digit-hour": (
        '  - wait: 1h\n  - wait: {for: 1h, at: "7:05", days: [sat, sun]}',
        [],
    ),
}


@pytest.mark.parametrize(("step", "expected"), list(PROBLEMS.values()), ids=list(PROBLEMS))
def test_mistakes_are_reported_at_their_position(tmp_path: Path, step: str, expected: list) -> None:
    text = "scenario: s\ntrigger: {event: order.placed}\nsteps:\n" + step + "\n"
    assert compile_text(tmp_path, text)[1] == expected


HELLO = "---\nsubject: Hello {{ customer.name }}\n---\n<p>Hello</p>\n"


def setup(project: Path, steps: str, extra_config: str = "") -> Path:
    """The `init` project (default timezone Europe/Moscow) with one scenario on order.placed."""
    config = project / "boomerang.yaml"
    text = config.read_text(encoding="utf-8").replace("scenarios: ./scenarios", "scenarios: ./mine")
    config.write_text(text.replace("templates: ./templates", "templates: ./mytemplates") + extra_config)
    (project / "mine").mkdir()
    (project / "mine" / "thanks.yaml").write_text(
        "scenario: thanks\ntrigger: {event: order.placed}\nsteps:\n" + textwrap.indent(steps, "  "),
        encoding="utf-8",
    )
    (project / "mytemplates" / "hello").mkdir(parents=True)
    (project / "mytemplates" / "hello" / "email.en.html").write_text(HELLO, encoding="utf-8")
    return config


def order(event_id: str, at: str, customer: str, timezone: str | None = None):
    profile = {"id": customer, "email": f"{customer}@example.com"}
    if timezone:
        profile["timezone"] = timezone
    return incoming(event_id, "order.placed", at, profile, {"order": {"id": event_id}})


async def test_the_next_ten_o_clock_is_each_customers_own(project: Path) -> None:
    config = setup(project, '- wait: {until_time: "10:00"}\n- send: hello\n')
    events = [
        # 21:30 in Vladivostok: the case, 10:00 the next day there (00:00 UTC).
        order("o1", "2026-03-02 11:30", "ann", "Asia/Vladivostok"),
        order("o2", "2026-03-02 11:30", "bob", "Europe/Kaliningrad"),  # 13:30 there
        order("o3", "2026-03-02 11:30", "cid"),  # no timezone: the plan's, Moscow (14:30)
    ]
    result = await simulate(config, events)
    sends = [(e.at, e.customer_id) for e in result.entries if e.kind == "send"]
    assert sends == [
        (t("2026-03-03 00:00"), "ann"),
        (t("2026-03-03 07:00"), "cid"),
        (t("2026-03-03 08:00"), "bob"),
    ]
    # The table shows each row at the customer's own time.
    table = result.as_table().splitlines()
    assert table[0].split()[:4] == ["time", "(UTC)", "local", "customer"]
    sent = {line.split()[5]: line.split()[2:5] for line in table if " send " in line}
    assert sent == {
        "ann": ["03-03", "10:00", "+10"],
        "cid": ["03-03", "10:00", "MSK"],
        "bob": ["03-03", "10:00", "EET"],
    }


async def test_at_least_a_day_then_ten_on_a_working_day(project: Path) -> None:
    config = setup(
        project, '- wait: {for: 1d, at: "10:00", days: [mon, tue, wed, thu, fri]}\n- send: hello\n'
    )
    events = [
        order("o1", "2026-03-02 06:00", "mon-morning"),  # Monday 09:00 in Moscow
        order("o2", "2026-03-02 18:30", "mon-evening"),  # Monday 21:30: a day later is past 10:00
        order("o3", "2026-03-05 18:30", "thu-evening"),  # Thursday 21:30: Saturday 10:00 is skipped
        # Friday 09:00 in Vladivostok is still Thursday 23:00 UTC: Saturday 10:00 there is skipped too.
        order("o4", "2026-03-05 23:00", "fri-morning", "Asia/Vladivostok"),
    ]
    result = await simulate(config, events)
    sends = {e.customer_id: e.at for e in result.entries if e.kind == "send"}
    assert sends == {
        "mon-morning": t("2026-03-03 07:00"),
        "mon-evening": t("2026-03-04 07:00"),
        "thu-evening": t("2026-03-09 07:00"),
        "fri-morning": t("2026-03-09 00:00"),
    }


async def test_quiet_hours_still_hold_back_a_send_timed_inside_them(project: Path) -> None:
    """The wait ends at 22:00 their time; the plan's quiet hours (21:00-09:00, every channel)
    then keep the message until 09:00: the scenario chooses when the step is reached, the
    contact plan whether a channel may be used then."""
    plan = '  quiet_hours: {from: "21:00", to: "09:00"}\n'
    config = setup(
        project,
        '- wait: {until_time: "22:00"}\n- send: hello\n- wait: {until_time: "10:00"}\n- send: hello\n',
        plan,
    )
    result = await simulate(config, [order("o1", "2026-03-02 08:00", "ann", "Europe/Kaliningrad")])
    moments = [(e.at, e.kind, e.step) for e in result.entries if e.kind in ("send", "defer")]
    assert moments == [
        (t("2026-03-02 20:00"), "defer", "1"),  # 22:00 in Kaliningrad
        (t("2026-03-03 07:00"), "send", "1"),  # 09:00 there, the end of the quiet hours
        (t("2026-03-03 08:00"), "send", "3"),  # the next 10:00 after the step was reached at 22:00
    ]


async def test_until_idle_puts_off_the_time_of_day_while_the_customer_browses(project: Path) -> None:
    """At 10:00 their time the wait looks at `until_idle`: still on the site, the message goes
    once they have been quiet for 20 minutes (10:25), not a day later."""
    config = setup(project, '- wait: {until_time: "10:00"}\n  until_idle: 20m\n- send: hello\n')
    viewed = {"product": {"sku": "a"}}
    events = [
        order("o1", "2026-03-02 06:00", "ann"),  # 09:00 in Moscow
        order("o2", "2026-03-02 06:00", "bob"),
        incoming("v1", "product.viewed", "2026-03-02 06:55", {"id": "ann"}, viewed),
        incoming("v2", "product.viewed", "2026-03-02 07:05", {"id": "ann"}, viewed),
    ]
    result = await simulate(config, events)
    assert {e.customer_id: e.at for e in result.entries if e.kind == "send"} == {
        "bob": t("2026-03-02 07:00"),
        "ann": t("2026-03-02 07:25"),
    }


async def test_a_birthday_at_ten_on_each_customers_own_clock(project: Path) -> None:
    config = setup(project, "- send: hello\n")
    (project / "mine" / "thanks.yaml").write_text(
        "scenario: birthday\ntrigger: {date: customer.birthday}\nsteps:\n  - send: hello\n", encoding="utf-8"
    )

    def profile(event_id: str, customer: str, birthday: str, timezone: str | None = None):
        fields = {"id": customer, "email": f"{customer}@example.com", "birthday": birthday}
        return incoming(event_id, "customer.updated", "2026-03-01 06:00", {**fields, "timezone": timezone})

    events = [
        profile("p1", "vladivostok", "1990-03-05", "Asia/Vladivostok"),
        profile("p2", "kaliningrad", "1990-03-05", "Europe/Kaliningrad"),
        profile("p3", "moscow", "1990-03-05"),  # no timezone: the plan's
        profile(
            "p4", "auckland", "1990-03-05", "Pacific/Auckland"
        ),  # 10:00 there is 21:00 UTC the day before
        profile("p5", "new-york", "1990-03-05", "America/New_York"),
        profile("p6", "new-york-dst", "1990-03-08", "America/New_York"),  # the clocks go forward that night
        profile("p7", "someone-else", "1990-03-06", "Asia/Vladivostok"),
    ]
    result = await simulate(config, events, until=t("2026-03-09 00:00"))
    enters = [(e.at, e.customer_id) for e in result.entries if e.kind == "enter"]
    assert enters == [
        (t("2026-03-04 21:00"), "auckland"),
        (t("2026-03-05 00:00"), "vladivostok"),
        (t("2026-03-05 07:00"), "moscow"),
        (t("2026-03-05 08:00"), "kaliningrad"),
        (t("2026-03-05 15:00"), "new-york"),
        (t("2026-03-06 00:00"), "someone-else"),
        (t("2026-03-08 14:00"), "new-york-dst"),
    ]
    assert {e.reason for e in result.entries if e.kind == "enter"} == {"entered on date"}
