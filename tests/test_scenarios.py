"""The scenario compiler: every step and trigger kind, and every problem with its `file:line:col`."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from boomerang.problems import ProblemError
from boomerang.scenarios import Goal, compile_scenario, compile_scenarios, load_scenarios

SCENARIO_KEYS = "scenario, description, category, trigger, restart, reentry, exit_on, goal, holdout, steps"
STEP_KINDS = "wait, if, split, send, action, set, stop"


def write(directory: Path, text: str, name: str = "scenario.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def compile_text(tmp_path: Path, text: str):
    path = write(tmp_path / "scenarios", text)
    scenario, problems = compile_scenario(path)
    for problem in problems:
        assert problem.file == str(path)
    return scenario, [(p.line, p.col, p.severity, p.message) for p in problems]


EVERY_STEP = """\
scenario: every-step
description: One of each step kind.
category: promo
trigger:
  event: [cart.updated, checkout.started]
  if: cart.items | length > 0
restart: true
reentry: 7d
exit_on: [order.placed, order.cancelled]
goal: {event: order.placed, within: 3d}
holdout: 10%
steps:
  - wait: 20m
    until_idle: 5m
  - send: cart_reminder
    channels: [push, sms, email]
    promo: {percent: 10, expires: 48h}
    expires: 2h
  - split:
      a: {weight: 30%, steps: [{send: variant_a}, {wait: 1h}]}
      b:
        weight: 70%
        steps:
          - set: {vip: true, note: "hi {{ customer.name }}"}
          - action: crm.note
            with: {text: "Call {{ customer.name }}", deadline: 1d}
  - wait: {for: 3d, until: order.delivered}
  - if: waited.event == 'order.delivered'
    then:
      - send: thanks
      - stop
    else:
      - send: where_is_it
  - send: last
"""


def test_every_step_kind_compiles_with_paths_and_successors(tmp_path: Path) -> None:
    scenario, problems = compile_text(tmp_path, EVERY_STEP)
    assert problems == []
    assert scenario is not None
    assert scenario.id == "every-step"
    assert scenario.category == "promo"
    assert scenario.description == "One of each step kind."
    assert scenario.restart is True
    assert scenario.reentry == timedelta(days=7)
    assert scenario.exit_on == ("order.placed", "order.cancelled")
    assert scenario.goal == Goal("order.placed", timedelta(days=3))
    assert scenario.holdout == pytest.approx(0.1)
    assert scenario.first == "0"
    kinds = {path: step.kind for path, step in scenario.index.items()}
    assert kinds == {
        "0": "wait",
        "1": "send",
        "2": "split",
        "2.a.0": "send",
        "2.a.1": "wait",
        "2.b.0": "set",
        "2.b.1": "action",
        "3": "wait_for",
        "4": "if",
        "4.then.0": "send",
        "4.then.1": "stop",
        "4.else.0": "send",
        "5": "send",
    }
    assert scenario.next_of == {
        "0": "1",
        "1": "2",
        "2": "3",
        "2.a.0": "2.a.1",
        "2.a.1": "3",
        "2.b.0": "2.b.1",
        "2.b.1": "3",
        "3": "4",
        "4": "5",
        "4.then.0": "4.then.1",
        "4.then.1": "5",
        "4.else.0": "5",
        "5": None,
    }
    assert [step.path for step in scenario.walk()] == list(kinds)
    index = scenario.index
    assert (index["0"].duration, index["0"].until_idle) == (timedelta(minutes=20), timedelta(minutes=5))
    assert (index["0"].line, index["0"].col) == (13, 5)
    send = index["1"]
    assert (send.template, send.channels, send.expires) == (
        "cart_reminder",
        ("push", "sms", "email"),
        timedelta(hours=2),
    )
    assert send.promo == {"percent": 10, "expires": timedelta(hours=48)}
    split = index["2"]
    assert [(v.name, v.weight, [s.path for s in v.steps]) for v in split.variants] == [
        ("a", pytest.approx(0.3), ["2.a.0", "2.a.1"]),
        ("b", pytest.approx(0.7), ["2.b.0", "2.b.1"]),
    ]
    assert index["2.a.0"].template == "variant_a"
    assert index["2.a.1"].duration == timedelta(hours=1)
    assert index["2.b.0"].assignments == {"vip": True, "note": "hi {{ customer.name }}"}
    assert index["2.b.1"].action == "crm.note"
    assert index["2.b.1"].arguments == {"text": "Call {{ customer.name }}", "deadline": "1d"}
    assert (index["3"].duration, index["3"].until_event) == (timedelta(days=3), "order.delivered")
    condition = index["4"].condition
    assert condition is not None and condition.source == "waited.event == 'order.delivered'"
    assert condition.test({"waited": {"event": "order.delivered"}}) is True
    assert condition.test({"waited": {"event": None}}) is False
    assert [s.path for s in index["4"].then] == ["4.then.0", "4.then.1"]
    assert [s.path for s in index["4"].otherwise] == ["4.else.0"]
    trigger = scenario.trigger
    assert (trigger.kind, trigger.events) == ("event", ("cart.updated", "checkout.started"))
    assert trigger.condition is not None
    assert trigger.condition.test({"cart": {"items": [{"sku": "B-1"}]}}) is True
    assert trigger.condition.test({"cart": {"items": []}}) is False
    assert trigger.condition.test({}) is False  # no cart at all: `cart.items | length` is 0


def test_defaults_of_a_minimal_scenario(tmp_path: Path) -> None:
    scenario, problems = compile_text(
        tmp_path,
        """\
        scenario: minimal
        trigger: {event: order.placed}
        goal: order.paid
        reentry: once
        steps:
          - send: thanks
          - stop
        """,
    )
    assert problems == []
    assert scenario is not None
    assert (scenario.category, scenario.restart, scenario.holdout, scenario.exit_on) == (
        "trigger",
        False,
        0.0,
        (),
    )
    assert scenario.reentry == "once"
    assert scenario.goal == Goal("order.paid", timedelta(days=7))
    assert scenario.trigger.condition is None
    assert scenario.next_of == {"0": "1", "1": None}
    assert scenario.index["1"].kind == "stop"


@pytest.mark.parametrize(
    ("reentry", "expected"),
    [("once", "once"), ("always", "always"), ("7d", timedelta(days=7)), ("12h", timedelta(hours=12))],
)
def test_reentry_forms(tmp_path: Path, reentry: str, expected) -> None:
    scenario, problems = compile_text(
        tmp_path, f"scenario: r\ntrigger: {{event: cart.updated}}\nreentry: {reentry}\nsteps: [stop]\n"
    )
    assert problems == []
    assert scenario is not None and scenario.reentry == expected


def test_schedule_trigger(tmp_path: Path) -> None:
    scenario, problems = compile_text(
        tmp_path,
        """\
        scenario: weekly-digest
        trigger: {schedule: "0 10 * * 1", audience: "customer.orders_count >= 1"}
        steps:
          - send: digest
        """,
    )
    assert problems == []
    assert scenario is not None
    trigger = scenario.trigger
    assert (trigger.kind, trigger.cron, trigger.events) == ("schedule", "0 10 * * 1", ())
    assert trigger.audience is not None
    assert trigger.audience.test({"customer": {"orders_count": 2}}) is True
    assert trigger.audience.test({"customer": {"orders_count": 0}}) is False


@pytest.mark.parametrize(
    ("trigger", "field", "offset", "time_of_day"),
    [
        ("{date: customer.birthday, offset: -3d}", "birthday", timedelta(days=-3), (10, 0)),
        ("{date: customer.birthday}", "birthday", timedelta(0), (10, 0)),
        (
            '{date: customer.attributes.anniversary, offset: +1w, at: "09:30"}',
            "attributes.anniversary",
            timedelta(weeks=1),
            (9, 30),
        ),
    ],
    ids=["birthday-minus-3d", "birthday", "attribute-plus-1w-at"],
)
def test_date_trigger(tmp_path: Path, trigger: str, field: str, offset: timedelta, time_of_day) -> None:
    scenario, problems = compile_text(tmp_path, f"scenario: d\ntrigger: {trigger}\nsteps: [{{send: hb}}]\n")
    assert problems == []
    assert scenario is not None
    assert (scenario.trigger.kind, scenario.trigger.date_field) == ("date", field)
    assert (scenario.trigger.offset, scenario.trigger.time_of_day) == (offset, time_of_day)


PROBLEMS = {
    "unknown-top-level-key": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        exit_onn: [order.placed]
        steps: [stop]
        """,
        [
            (
                3,
                1,
                "error",
                "unknown key 'exit_onn' in a scenario (did you mean 'exit_on'?); "
                f"expected one of: {SCENARIO_KEYS}",
            )
        ],
    ),
    "unknown-step-key": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - send: cart_reminder
            chanels: [email]
        """,
        [
            (
                5,
                5,
                "error",
                "unknown key 'chanels' in a send step (did you mean 'channels'?); "
                "expected one of: send, channels, promo, expires",
            )
        ],
    ),
    "unknown-key-in-a-wait-for": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - wait: {for: 3d, until: order.delivered, unless: order.cancelled}
        """,
        [(4, 45, "error", "unknown key 'unless' in wait; expected one of: for, until, until_time, at, days")],
    ),
    "two-kinds-in-one-step": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - wait: 1h
          - send: cart_reminder
            wait: 1h
        """,
        [(5, 5, "error", f"a step has exactly one of: {STEP_KINDS}; found wait, send")],
    ),
    "not-a-step": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - wiat: 1h
        """,
        [
            (
                4,
                5,
                "error",
                f"a step has exactly one of: {STEP_KINDS}; 'wiat' is not a step (did you mean 'wait'?)",
            )
        ],
    ),
    "bad-duration": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - wait: 20 minutes
        """,
        [(4, 11, "error", "'20 minutes' is not a duration; write a number and a unit: 30s, 20m, 2h, 1d, 3w")],
    ),
    "bad-until-idle": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - wait: 20m
            until_idle: soon
        """,
        [(5, 17, "error", "'soon' is not a duration; write a number and a unit: 30s, 20m, 2h, 1d, 3w")],
    ),
    "bad-cron": (
        """\
        scenario: s
        trigger:
          schedule: "0 25 * * *"
          audience: "true"
        steps: [stop]
        """,
        [(3, 13, "error", "'0 25 * * *' is not a cron expression such as '0 10 * * *'")],
    ),
    "schedule-without-audience": (
        """\
        scenario: s
        trigger: {schedule: "0 10 * * *"}
        steps: [stop]
        """,
        [(2, 10, "error", "a schedule trigger needs an audience: <expression> ('true' for all)")],
    ),
    "unparsable-trigger-condition": (
        """\
        scenario: s
        trigger:
          event: cart.updated
          if: cart.total >
        steps: [stop]
        """,
        [(4, 7, "error", "cannot parse expression 'cart.total >': unexpected 'end of template'")],
    ),
    "unparsable-if-step": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - wait: 1h
          - if: "cart.total >>= 50"
            then: [stop]
        """,
        [(5, 9, "error", "cannot parse expression 'cart.total >>= 50': unexpected '>='")],
    ),
    "unparsable-audience": (
        """\
        scenario: s
        trigger: {schedule: "0 10 * * *", audience: "customer.orders_count >"}
        steps: [stop]
        """,
        [
            (
                2,
                45,
                "error",
                "cannot parse expression 'customer.orders_count >': unexpected 'end of template'",
            )
        ],
    ),
    "split-weights-short-of-100": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - split: {a: 50%, b: 40%}
        """,
        [(4, 12, "error", "split weights add up to 90%, not 100%")],
    ),
    "split-weights-over-100": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - split:
              a: {weight: 70%, steps: [{send: x}]}
              b: {weight: 40%, steps: [{send: y}]}
        """,
        [(5, 7, "error", "split weights add up to 110%, not 100%")],
    ),
    "split-variant-without-weight": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - split:
              a: {weight: 50%, steps: [{send: x}]}
              b: half
        """,
        [
            (6, 10, "error", "variant 'b' needs a weight such as 50%"),
            (5, 7, "error", "split weights add up to 50%, not 100%"),
        ],
    ),
    "reentry-invalid": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        reentry: sometimes
        steps: [stop]
        """,
        [(3, 10, "error", "reentry must be once, always or a duration such as 7d, not 'sometimes'")],
    ),
    "holdout-invalid": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        holdout: ten
        steps: [stop]
        """,
        [(3, 10, "error", "'ten' is not a percentage such as 10%")],
    ),
    "holdout-over-100": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        holdout: 120%
        steps: [stop]
        """,
        [(3, 10, "error", "'120%' is not a percentage such as 10%")],
    ),
    "date-trigger-on-a-non-customer-field": (
        """\
        scenario: s
        trigger: {date: order.placed_at, offset: -3d}
        steps: [stop]
        """,
        [
            (
                2,
                17,
                "error",
                "'order.placed_at' is not a customer date; "
                "write customer.birthday or customer.attributes.<name>",
            )
        ],
    ),
    "date-trigger-bad-offset-and-time": (
        """\
        scenario: s
        trigger: {date: customer.birthday, offset: three days, at: "25:00"}
        steps: [stop]
        """,
        [
            (2, 44, "error", "'three days' is not a duration such as -3d or 2h"),
            (2, 60, "error", "'25:00' is not a time of day such as \"10:00\""),
        ],
    ),
    "missing-trigger-and-steps": (
        """\
        scenario: s
        description: nothing else
        """,
        [
            (
                1,
                1,
                "error",
                "'trigger' is required: {event: <type>}, {schedule: <cron>, audience: <expression>} "
                "or {date: customer.birthday, offset: -3d}",
            ),
            (1, 1, "error", "'steps' is required: a list of steps"),
        ],
    ),
    "two-trigger-kinds": (
        """\
        scenario: s
        trigger: {event: cart.updated, schedule: "0 10 * * *"}
        steps: [stop]
        """,
        [(2, 10, "error", "a trigger has exactly one of: event, schedule, date")],
    ),
    "bad-event-type": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        exit_on: [order.placed, placed]
        steps: [stop]
        """,
        [(3, 25, "error", "'placed' is not an event type such as order.placed")],
    ),
    "bad-scenario-id-and-category": (
        """\
        scenario: Abandoned Cart
        category: trigerr
        trigger: {event: cart.updated}
        steps: [stop]
        """,
        [
            (1, 11, "error", "'scenario: <id>' is required: lower-case letters, digits, - and _"),
            (
                2,
                11,
                "error",
                "category must be one of transactional, trigger, promo (did you mean 'trigger'?)",
            ),
        ],
    ),
    "if-without-then": (
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - if: cart.total > 5
            else: [stop]
        """,
        [(4, 5, "error", "an if step needs 'then:' with a list of steps")],
    ),
}


@pytest.mark.parametrize(("text", "expected"), list(PROBLEMS.values()), ids=list(PROBLEMS))
def test_problems_have_exact_positions_and_messages(tmp_path: Path, text: str, expected: list) -> None:
    _, problems = compile_text(tmp_path, text)
    assert problems == expected


def test_a_step_after_stop_is_a_warning_and_the_scenario_still_compiles(tmp_path: Path) -> None:
    scenario, problems = compile_text(
        tmp_path,
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - send: first
          - stop
          - send: never
          - if: cart.total > 5
            then:
              - stop
              - send: never_either
          - send: reachable
        """,
    )
    assert problems == [
        (6, 5, "warning", "this step can never run: it follows a stop"),
        (10, 9, "warning", "this step can never run: it follows a stop"),
    ]
    assert scenario is not None
    assert scenario.next_of["3.then.0"] == "3.then.1"
    assert scenario.next_of["3.then.1"] == "4"


def test_a_stop_at_the_end_of_a_branch_is_no_warning(tmp_path: Path) -> None:
    _, problems = compile_text(
        tmp_path,
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - if: cart.total > 5
            then: [{send: a}, stop]
          - split:
              a: {weight: 50%, steps: [stop]}
              b: {weight: 50%, steps: [{send: b}]}
          - send: c
        """,
    )
    assert problems == []


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("scenario: s\ntrigger: {event: cart.updated\nsteps: [stop]\n", (3, 6), "invalid YAML: "),
        ("scenario: s\ntrigger: {event: cart.updated}\nsteps:\n  - wait: [1h\n", (5, 1), "invalid YAML: "),
        ("scenario: s\nsteps: [stop]\nsteps: [stop]\n", (3, 1), 'invalid YAML: found duplicate key "steps"'),
    ],
    ids=["unclosed-flow-mapping", "unclosed-flow-sequence", "duplicate-key"],
)
def test_invalid_yaml_names_the_position(tmp_path: Path, text: str, position, fragment: str) -> None:
    path = write(tmp_path, text)
    scenario, problems = compile_scenario(path)
    assert scenario is None
    [problem] = problems
    assert (problem.file, problem.line, problem.col, problem.severity) == (str(path), *position, "error")
    assert problem.message.startswith(fragment)


INDENTED_DIFFERENTLY = "this line is indented differently from the lines above it: "


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        (
            "scenario: s\ntrigger: {event: cart.updated}\nsteps:\n  - send: a\n  wait: 1h\n",
            (5, 3),
            INDENTED_DIFFERENTLY + "line it up with the keys (or the '- ' items) it belongs with",
        ),
        (
            "scenario: s\ntrigger:\n    event: cart.updated\n  if: cart.total > 0\nsteps: [stop]\n",
            (4, 3),
            INDENTED_DIFFERENTLY + "line it up with the keys (or the '- ' items) it belongs with",
        ),
        (
            "scenario: s\ntrigger:\n  event: cart.updated\n    if: cart.total > 0\nsteps: [stop]\n",
            (4, 7),
            "a 'key:' where none can start: this line is indented further than the one above it, "
            "or a value holds ': ' and must be put in quotes",
        ),
        (
            "scenario: s\ntrigger:\n\tevent: cart.updated\nsteps: [stop]\n",
            (3, 1),
            "a tab: indent with spaces only",
        ),
    ],
    ids=["step-key-outdented", "key-outdented", "key-indented", "tab"],
)
def test_indentation_mistakes_are_told_in_the_files_terms(
    tmp_path: Path, text: str, position: tuple[int, int], message: str
) -> None:
    path = write(tmp_path, text)
    _, problems = compile_scenario(path)
    [problem] = problems
    assert (problem.line, problem.col, problem.message) == (*position, f"invalid YAML: {message}")


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    _, problems = compile_text(tmp_path, "- send: x\n")
    assert problems == [(1, 1, "error", "a scenario must be a mapping starting with 'scenario: <id>'")]


def test_duplicate_ids_across_files_and_load_scenarios(tmp_path: Path) -> None:
    first = write(tmp_path, "scenario: same\ntrigger: {event: cart.updated}\nsteps: [stop]\n", "a.yaml")
    second = write(tmp_path, "scenario: same\ntrigger: {event: order.placed}\nsteps: [stop]\n", "b.yaml")
    scenarios, problems = compile_scenarios([first, second])
    assert [s.file for s in scenarios] == [first]
    assert [(p.file, p.line, p.col, p.message) for p in problems] == [
        (str(second), 1, 11, f"scenario id 'same' is already used by {first}")
    ]
    with pytest.raises(ProblemError) as raised:
        load_scenarios([first, second])
    assert [str(p) for p in raised.value.errors] == [
        f"{second}:1:11: error: scenario id 'same' is already used by {first}"
    ]
    assert [s.id for s in load_scenarios([first])] == ["same"]


def test_error_in_a_block_scalar_expression_points_at_its_line(tmp_path: Path) -> None:
    _, problems = compile_text(
        tmp_path,
        """\
        scenario: s
        trigger:
          event: cart.updated
          if: |
            cart.total > 1 and
            cart.total <
        steps: [stop]
        """,
    )
    # The broken second line of the expression is line 6 of the file.
    assert [(line, severity) for line, _, severity, _ in problems] == [(6, "error")]


def test_a_template_syntax_error_nested_in_with_is_reported(tmp_path: Path) -> None:
    _, problems = compile_text(
        tmp_path,
        """\
        scenario: s
        trigger: {event: cart.updated}
        steps:
          - action: crm.create_task
            with:
              task: {title: "Call {{ customer.name "}
        """,
    )
    assert [(line, severity) for line, _, severity, _ in problems] == [(6, "error")]
