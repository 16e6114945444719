"""Scenario YAML → validated, compiled scenarios, with `file:line:col` for every problem.

A scenario's steps form a tree (`if` and `split` hold lists of steps). Each step has a path
such as `3`, `4.then.0` or `2.b.1`; a journey's position is the path of its next step, and
`Scenario.next_of` says where to go after each step, so the engine never walks the tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

from boomerang.clock import parse_duration
from boomerang.expressions import (
    Expression,
    ExpressionError,
    Refused,
    Sandbox,
    compile_expression,
    make_environment,
)
from boomerang.local_time import DAY_NAMES, WEEKDAYS, weekday_of
from boomerang.model import CATEGORIES
from boomerang.names import (
    NameUse,
    RecommendationCall,
    place,
    placed_call,
    recommendation_calls,
    template_names,
)
from boomerang.problems import Problem, ProblemError, did_you_mean
from boomerang.promo_codes import prefix_problem
from boomerang.yamlfile import key_position, load_yaml, node_position, value_position

SCENARIO_KEYS = (
    "scenario",
    "description",
    "category",
    "trigger",
    "restart",
    "reentry",
    "exit_on",
    "goal",
    "holdout",
    "steps",
)
STEP_KINDS = ("wait", "if", "split", "send", "action", "set", "stop")
STEP_KEYS = {
    "wait": ("wait", "until_idle"),
    "if": ("if", "then", "else"),
    "split": ("split",),
    "send": ("send", "channels", "promo", "expires"),
    "action": ("action", "with"),
    "set": ("set",),
    "stop": ("stop",),
}
WAIT_KEYS = ("for", "until", "until_time", "at", "days")
WAIT_FORMS = '2h, {for: 3d, until: <event type>}, {until_time: "10:00"} or {for: 1d, at: "10:00"}'
DEFAULT_GOAL_WINDOW = timedelta(days=7)
_SIGNED_DURATION = re.compile(r"^\s*([+-]?)\s*(\d+\s*[smhdw])\s*$")
_TIME_OF_DAY = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_ATTRIBUTE = re.compile(r"^customer\.(birthday|attributes\.[A-Za-z_][A-Za-z0-9_]*)$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


@dataclass
class Trigger:
    """How journeys start: on an event, on a cron schedule, or on a yearly date."""

    kind: str  # "event" | "schedule" | "date"
    events: tuple[str, ...] = ()
    condition: Expression | None = None
    cron: str | None = None
    audience: Expression | None = None
    date_field: str | None = None  # "birthday" or "attributes.<name>"
    offset: timedelta = timedelta(0)
    time_of_day: tuple[int, int] = (10, 0)


@dataclass
class Variant:
    """One branch of a `split`."""

    name: str
    weight: float  # a share between 0 and 1
    steps: list[Step]


@dataclass
class Step:
    """One step; which fields are used depends on `kind`."""

    path: str
    kind: str  # wait | wait_for | if | split | send | action | set | stop
    line: int
    col: int
    duration: timedelta | None = None
    at: time | None = None  # a wait ends at this time of day on the customer's clock...
    weekdays: frozenset[int] | None = None  # ...on one of these days (0 is Monday; None: any)
    until_idle: timedelta | None = None
    until_event: str | None = None
    condition: Expression | None = None
    then: list[Step] = field(default_factory=list)
    otherwise: list[Step] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    template: str | None = None
    channels: tuple[str, ...] | None = None
    promo: dict[str, Any] | None = None
    expires: timedelta | None = None
    action: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    assignments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Goal:
    """The conversion a scenario is judged by, counted within `within` after the journey ends."""

    event: str
    within: timedelta = DEFAULT_GOAL_WINDOW


@dataclass
class Scenario:
    """One scenario file, compiled."""

    id: str
    file: Path
    category: str
    description: str
    trigger: Trigger
    steps: list[Step]
    restart: bool = False
    reentry: str | timedelta = "always"
    exit_on: tuple[str, ...] = ()
    goal: Goal | None = None
    holdout: float = 0.0
    index: dict[str, Step] = field(default_factory=dict)
    next_of: dict[str, str | None] = field(default_factory=dict)
    document: Any = field(default=None, repr=False)
    names: list[NameUse] = field(default_factory=list)  # top-level names its expressions use
    expressions: list[Expression] = field(default_factory=list, repr=False)  # for `Project.warm`
    # the `recommendations(...)` calls of its `with:` and `set:` values, for `check`
    recommendations: list[RecommendationCall] = field(default_factory=list)

    @property
    def first(self) -> str | None:
        """Path of the first step."""
        return self.steps[0].path if self.steps else None

    def walk(self) -> list[Step]:
        """Every step, depth first, in file order."""
        return list(self.index.values())


def parse_signed_duration(text: Any) -> timedelta:
    """`-3d`, `+2h`, `1w` → timedelta; for trigger offsets."""
    match = _SIGNED_DURATION.match(str(text))
    if not match:
        raise ValueError(f"'{text}' is not a duration such as -3d or 2h")
    value = parse_duration(match.group(2))
    return -value if match.group(1) == "-" else value


def parse_percent(value: Any) -> float:
    """`10%` → 0.1."""
    match = _PERCENT.match(str(value))
    if not match or float(match.group(1)) > 100:
        raise ValueError(f"'{value}' is not a percentage such as 10%")
    return float(match.group(1)) / 100


class _Compiler:
    """Turns one scenario document into a `Scenario`, collecting every problem on the way."""

    def __init__(self, file: str, environment: Sandbox, lines: list[str]):
        self.file = file
        self.environment = environment
        self.lines = lines
        self.problems: list[Problem] = []
        self.names: list[NameUse] = []
        self.expressions: list[Expression] = []
        self.recommendations: list[RecommendationCall] = []

    def error(self, position: tuple[int, int], message: str, severity: str = "error") -> None:
        self.problems.append(Problem(self.file, position[0], position[1], message, severity))

    def unknown_keys(self, node: CommentedMap, known: tuple[str, ...], what: str) -> None:
        for key in node:
            if key not in known:
                self.error(
                    key_position(node, key),
                    f"unknown key '{key}' in {what}{did_you_mean(str(key), known)}; "
                    f"expected one of: {', '.join(known)}",
                )

    def expression(self, parent: Any, key: Any) -> Expression | None:
        line, col = value_position(parent, key)
        if isinstance(parent[key], LiteralScalarString | FoldedScalarString):
            line += 1  # a block scalar's text starts on the line after its `|` or `>`
        try:
            expression = compile_expression(parent[key], self.environment)
        except ExpressionError as exc:
            self.error((line + exc.line - 1, col), str(exc))
            return None
        self.names.extend(place(expression.names, self.lines, line, col))
        self.expressions.append(expression)
        return expression

    def duration(self, parent: Any, key: Any) -> timedelta | None:
        try:
            return parse_duration(parent[key])
        except ValueError as exc:
            self.error(value_position(parent, key), str(exc))
            return None

    def time_of_day(self, parent: Any, key: Any) -> time | None:
        match = _TIME_OF_DAY.match(str(parent[key]))
        if not match:
            self.error(value_position(parent, key), f"'{parent[key]}' is not a time of day such as \"10:00\"")
            return None
        return time(int(match.group(1)), int(match.group(2)))

    def weekdays(self, parent: Any, key: Any) -> frozenset[int] | None:
        value = parent[key]
        if not isinstance(value, CommentedSeq) or not value:
            self.error(value_position(parent, key), "days is a list of days of the week such as [mon, fri]")
            return None
        days = set()
        for index, item in enumerate(value):
            day = weekday_of(item) if isinstance(item, str) else None
            if day is None:
                word = str(item).lower()
                hint = did_you_mean(word, DAY_NAMES if len(word) > 4 else WEEKDAYS)
                self.error(
                    value_position(value, index),
                    f"'{item}' is not a day of the week{hint}; write {', '.join(WEEKDAYS)}",
                )
            else:
                days.add(day)
        return frozenset(days) if len(days) == len(value) else None

    def event_types(self, parent: Any, key: str) -> tuple[str, ...]:
        value = parent[key]
        items = list(value) if isinstance(value, CommentedSeq) else [value]
        types = []
        for index, item in enumerate(items):
            if not isinstance(item, str) or not re.match(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+$", item):
                where = (
                    value_position(value, index)
                    if isinstance(value, CommentedSeq)
                    else value_position(parent, key)
                )
                self.error(where, f"'{item}' is not an event type such as order.placed")
            else:
                types.append(item)
        return tuple(types)

    # the scenario
    def scenario(self, path: Path, doc: Any) -> Scenario | None:
        if not isinstance(doc, CommentedMap):
            self.error((1, 1), "a scenario must be a mapping starting with 'scenario: <id>'")
            return None
        self.unknown_keys(doc, SCENARIO_KEYS, "a scenario")
        scenario_id = doc.get("scenario")
        if not isinstance(scenario_id, str) or not re.match(r"^[a-z0-9][a-z0-9_-]*$", scenario_id):
            where = value_position(doc, "scenario") if "scenario" in doc else (1, 1)
            self.error(where, "'scenario: <id>' is required: lower-case letters, digits, - and _")
            scenario_id = str(scenario_id)
        category = doc.get("category", "trigger")
        if category not in CATEGORIES:
            self.error(
                value_position(doc, "category"),
                f"category must be one of {', '.join(CATEGORIES)}{did_you_mean(str(category), CATEGORIES)}",
            )
        trigger = self.trigger(doc)
        steps: list[Step] = []
        if not isinstance(doc.get("steps"), CommentedSeq) or not doc["steps"]:
            where = value_position(doc, "steps") if "steps" in doc else (1, 1)
            self.error(where, "'steps' is required: a list of steps")
        else:
            steps = self.steps(doc["steps"], "")
        restart = doc.get("restart", False)
        if not isinstance(restart, bool):
            self.error(value_position(doc, "restart"), "restart must be true or false")
        reentry: str | timedelta = "always"
        if "reentry" in doc:
            value = doc["reentry"]
            if value in ("once", "always"):
                reentry = value
            else:
                try:
                    reentry = parse_duration(value)
                except ValueError:
                    self.error(
                        value_position(doc, "reentry"),
                        f"reentry must be once, always or a duration such as 7d, not '{value}'",
                    )
        exit_on = self.event_types(doc, "exit_on") if "exit_on" in doc else ()
        goal = self.goal(doc) if "goal" in doc else None
        holdout = 0.0
        if "holdout" in doc:
            try:
                holdout = parse_percent(doc["holdout"])
            except ValueError as exc:
                self.error(value_position(doc, "holdout"), str(exc))
        scenario = Scenario(
            id=scenario_id,
            file=path,
            category=str(category),
            description=str(doc.get("description", "")),
            trigger=trigger or Trigger("event"),
            steps=steps,
            restart=bool(restart),
            reentry=reentry,
            exit_on=exit_on,
            goal=goal,
            holdout=holdout,
            document=doc,
        )
        _link(scenario.steps, None, scenario)
        self.unreachable(scenario.steps)
        return scenario

    def trigger(self, doc: CommentedMap) -> Trigger | None:
        node = doc.get("trigger")
        if not isinstance(node, CommentedMap):
            where = value_position(doc, "trigger") if "trigger" in doc else (1, 1)
            self.error(
                where,
                "'trigger' is required: {event: <type>}, {schedule: <cron>, audience: <expression>} "
                "or {date: customer.birthday, offset: -3d}",
            )
            return None
        kinds = [kind for kind in ("event", "schedule", "date") if kind in node]
        if len(kinds) != 1:
            self.error(node_position(node), "a trigger has exactly one of: event, schedule, date")
            return None
        kind = kinds[0]
        if kind == "event":
            self.unknown_keys(node, ("event", "if"), "an event trigger")
            trigger = Trigger("event", events=self.event_types(node, "event"))
            if "if" in node:
                trigger.condition = self.expression(node, "if")
            return trigger
        if kind == "schedule":
            self.unknown_keys(node, ("schedule", "audience"), "a schedule trigger")
            cron = str(node["schedule"])
            # here, not at the top: only a schedule needs it, and `check` must start fast
            from croniter import croniter

            if not croniter.is_valid(cron):
                self.error(
                    value_position(node, "schedule"),
                    f"'{cron}' is not a cron expression such as '0 10 * * *'",
                )
            if "audience" not in node:
                self.error(
                    node_position(node), "a schedule trigger needs an audience: <expression> ('true' for all)"
                )
                return Trigger("schedule", cron=cron)
            return Trigger("schedule", cron=cron, audience=self.expression(node, "audience"))
        self.unknown_keys(node, ("date", "offset", "at"), "a date trigger")
        field_match = _ATTRIBUTE.match(str(node["date"]))
        if not field_match:
            self.error(
                value_position(node, "date"),
                f"'{node['date']}' is not a customer date; "
                "write customer.birthday or customer.attributes.<name>",
            )
        trigger = Trigger("date", date_field=field_match.group(1) if field_match else None)
        if "offset" in node:
            try:
                trigger.offset = parse_signed_duration(node["offset"])
            except ValueError as exc:
                self.error(value_position(node, "offset"), str(exc))
        if "at" in node:
            at = self.time_of_day(node, "at")
            if at is not None:
                trigger.time_of_day = (at.hour, at.minute)
        return trigger

    def goal(self, doc: CommentedMap) -> Goal | None:
        value = doc["goal"]
        if isinstance(value, CommentedMap):
            self.unknown_keys(value, ("event", "within"), "a goal")
            if "event" not in value:
                self.error(node_position(value), "a goal needs an event: {event: order.placed, within: 7d}")
                return None
            types = self.event_types(value, "event")
            within = self.duration(value, "within") if "within" in value else DEFAULT_GOAL_WINDOW
            return Goal(types[0], within or DEFAULT_GOAL_WINDOW) if types else None
        types = self.event_types(doc, "goal")
        return Goal(types[0]) if types else None

    # steps
    def steps(self, node: CommentedSeq, prefix: str) -> list[Step]:
        steps = []
        for index, item in enumerate(node):
            path = f"{prefix}{index}"
            step = self.step(node, index, item, path)
            if step is not None:
                steps.append(step)
        return steps

    def step(self, parent: CommentedSeq, index: int, node: Any, path: str) -> Step | None:
        line, col = value_position(parent, index)
        if node == "stop":
            return Step(path, "stop", line, col)
        if not isinstance(node, CommentedMap) or not node:
            self.error((line, col), f"a step is a mapping with one of: {', '.join(STEP_KINDS)}")
            return None
        kinds = [kind for kind in STEP_KINDS if kind in node]
        if len(kinds) != 1:
            first = next(iter(node))
            hint = did_you_mean(str(first), STEP_KINDS) if not kinds else ""
            self.error(
                key_position(node, first) if not kinds else (line, col),
                f"a step has exactly one of: {', '.join(STEP_KINDS)}"
                + (f"; found {', '.join(kinds)}" if kinds else f"; '{first}' is not a step{hint}"),
            )
            return None
        kind = kinds[0]
        self.unknown_keys(node, STEP_KEYS[kind], f"a {kind} step")
        step = Step(path, kind, line, col)
        getattr(self, f"step_{kind}")(node, step)
        return step

    def step_wait(self, node: CommentedMap, step: Step) -> None:
        value = node["wait"]
        if isinstance(value, CommentedMap):
            self.unknown_keys(value, WAIT_KEYS, "wait")
            if "until" in value:
                self.wait_for_event(value, step)
            elif "until_time" in value:
                self.wait_until_time(value, step)
            elif "at" in value:
                if "for" not in value:
                    self.error(
                        key_position(value, "at"),
                        "'at' needs 'for': {for: 1d, at: \"10:00\"} waits at least a day, then until "
                        '10:00; to wait only until a time of day, write {until_time: "10:00"}',
                    )
                    return
                step.duration = self.duration(value, "for")
                step.at = self.time_of_day(value, "at")
            else:
                if all(key in WAIT_KEYS for key in value):  # else a misspelt key was reported
                    self.error(value_position(node, "wait"), f"a wait is {WAIT_FORMS}")
                return
            if "days" in value:
                step.weekdays = self.weekdays(value, "days")
        else:
            step.duration = self.duration(node, "wait")
        if "until_idle" in node:
            step.until_idle = self.duration(node, "until_idle")

    def wait_for_event(self, value: CommentedMap, step: Step) -> None:
        """`{for: 3d, until: order.placed}`: an event, or the timeout."""
        for key in ("until_time", "at", "days"):
            if key in value:
                self.error(
                    key_position(value, key),
                    f"'{key}' does not go with 'until' (a wait for an event); a wait is {WAIT_FORMS}",
                )
        if "for" not in value:
            self.error(
                key_position(value, "until"), "wait for an event is {for: <duration>, until: <event type>}"
            )
            return
        step.kind = "wait_for"
        step.duration = self.duration(value, "for")
        types = self.event_types(value, "until")
        step.until_event = types[0] if types else None

    def wait_until_time(self, value: CommentedMap, step: Step) -> None:
        """`{until_time: "10:00"}`: the next 10:00 on the customer's clock."""
        for key in ("for", "at"):
            if key in value:
                self.error(
                    key_position(value, key),
                    f"'{key}' does not go with 'until_time'; to wait at least a while and then until a "
                    'time of day, write {for: 1d, at: "10:00"}',
                )
        step.duration = timedelta(0)
        step.at = self.time_of_day(value, "until_time")

    def step_if(self, node: CommentedMap, step: Step) -> None:
        step.condition = self.expression(node, "if")
        for key, target in (("then", "then"), ("else", "otherwise")):
            if key not in node:
                if key == "then":
                    self.error((step.line, step.col), "an if step needs 'then:' with a list of steps")
                continue
            branch = node[key]
            if not isinstance(branch, CommentedSeq):
                self.error(value_position(node, key), f"'{key}' must be a list of steps")
                continue
            setattr(step, target, self.steps(branch, f"{step.path}.{key}."))

    def step_split(self, node: CommentedMap, step: Step) -> None:
        variants = node["split"]
        if not isinstance(variants, CommentedMap) or len(variants) < 2:
            self.error(value_position(node, "split"), "split needs two or more variants: {a: 50%, b: 50%}")
            return
        total = 0.0
        for name, value in variants.items():
            steps: list[Step] = []
            if isinstance(value, CommentedMap):
                self.unknown_keys(value, ("weight", "steps"), f"split variant '{name}'")
                weight_value = value.get("weight")
                if isinstance(value.get("steps"), CommentedSeq):
                    steps = self.steps(value["steps"], f"{step.path}.{name}.")
                elif "steps" in value:
                    self.error(value_position(value, "steps"), "'steps' must be a list of steps")
                where = (
                    value_position(value, "weight") if "weight" in value else value_position(variants, name)
                )
            else:
                weight_value, where = value, value_position(variants, name)
            try:
                weight = parse_percent(weight_value)
            except ValueError:
                self.error(where, f"variant '{name}' needs a weight such as 50%")
                continue
            total += weight
            step.variants.append(Variant(str(name), weight, steps))
        if step.variants and abs(total - 1.0) > 1e-9:
            self.error(value_position(node, "split"), f"split weights add up to {total:.0%}, not 100%")

    def step_send(self, node: CommentedMap, step: Step) -> None:
        template = node["send"]
        if not isinstance(template, str) or not re.match(r"^[A-Za-z0-9_.-]+$", template):
            self.error(value_position(node, "send"), "send names a template: letters, digits, _ . -")
        step.template = str(template)
        if "channels" in node:
            channels = node["channels"]
            items = list(channels) if isinstance(channels, CommentedSeq) else [channels]
            for index, channel in enumerate(items):
                if not isinstance(channel, str):
                    where = (
                        value_position(channels, index)
                        if isinstance(channels, CommentedSeq)
                        else value_position(node, "channels")
                    )
                    self.error(where, "channels is a list of channel names such as [push, sms, email]")
            step.channels = tuple(str(c) for c in items)
        if "promo" in node:
            promo = node["promo"]
            if not isinstance(promo, CommentedMap):
                self.error(
                    value_position(node, "promo"), "promo is a mapping such as {percent: 10, expires: 48h}"
                )
            else:
                self.unknown_keys(
                    promo, ("percent", "amount", "currency", "code", "provider", "prefix", "expires"), "promo"
                )
                step.promo = {str(k): v for k, v in promo.items()}
                if "prefix" in promo and (problem := prefix_problem(promo["prefix"])):
                    self.error(value_position(promo, "prefix"), problem)
                currency = promo.get("currency")
                if "currency" in promo and not (
                    isinstance(currency, str) and re.fullmatch("[A-Za-z]{3}", currency)
                ):
                    where = value_position(promo, "currency")
                    self.error(where, "currency is a three-letter code such as EUR")
                if "expires" in promo:
                    expires = self.duration(promo, "expires")
                    step.promo["expires"] = expires
        if "expires" in node:
            step.expires = self.duration(node, "expires")

    def step_action(self, node: CommentedMap, step: Step) -> None:
        name = node["action"]
        if not isinstance(name, str) or not name:
            self.error(
                value_position(node, "action"), "action names a registered action such as bitrix.create_task"
            )
        step.action = str(name)
        arguments = node.get("with", {})
        if not isinstance(arguments, CommentedMap):
            self.error(value_position(node, "with"), "'with' is a mapping of the action's arguments")
        else:
            step.arguments = _plain(arguments)
            self.templates_in(arguments)

    def step_set(self, node: CommentedMap, step: Step) -> None:
        assignments = node["set"]
        if not isinstance(assignments, CommentedMap) or not assignments:
            self.error(value_position(node, "set"), "set is a mapping of customer attributes: {vip: true}")
            return
        step.assignments = _plain(assignments)
        self.templates_in(assignments)

    def step_stop(self, node: CommentedMap, step: Step) -> None:
        if node["stop"] not in (True, None):
            self.error(value_position(node, "stop"), "write a bare '- stop'")

    def templates_in(self, node: Any) -> None:
        """Check that string values with {{ }} parse as templates, at any depth."""
        for key in node if isinstance(node, CommentedMap) else range(len(node)):
            value = node[key]
            if isinstance(value, CommentedMap | CommentedSeq):
                self.templates_in(value)
            elif isinstance(value, str) and ("{{" in value or "{%" in value):
                try:
                    tree = self.environment.parse(value)
                    uses = template_names(tree, self.environment)
                    self.environment.from_string(tree)
                except Exception as exc:  # noqa: BLE001 - Jinja raises several kinds of syntax error
                    what = "refused" if isinstance(exc, Refused) else "cannot parse"
                    self.error(value_position(node, key), f"{what} template '{value}': {exc}")
                else:
                    line, col = value_position(node, key)
                    self.names.extend(place(uses, self.lines, line, col, template=True))
                    self.recommendations.extend(
                        placed_call(call, line, self.lines) for call in recommendation_calls(tree)
                    )

    def unreachable(self, steps: list[Step]) -> None:
        for index, step in enumerate(steps):
            if step.kind == "stop" and index + 1 < len(steps):
                after = steps[index + 1]
                self.error((after.line, after.col), "this step can never run: it follows a stop", "warning")
            self.unreachable(step.then)
            self.unreachable(step.otherwise)
            for variant in step.variants:
                self.unreachable(variant.steps)


def _link(steps: list[Step], after: str | None, scenario: Scenario) -> None:
    """Fill `index` and `next_of`: each step's successor, climbing out of branches."""
    for position, step in enumerate(steps):
        following = steps[position + 1].path if position + 1 < len(steps) else after
        scenario.index[step.path] = step
        scenario.next_of[step.path] = following
        _link(step.then, following, scenario)
        _link(step.otherwise, following, scenario)
        for variant in step.variants:
            _link(variant.steps, following, scenario)


def _plain(node: Any) -> Any:
    """ruamel's containers → plain dicts and lists."""
    if isinstance(node, CommentedMap):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v) for v in node]
    return node


def compile_scenario(path: Path, environment: Sandbox | None = None) -> tuple[Scenario | None, list[Problem]]:
    """Compile one scenario file; returns the scenario (None if unusable) and every problem."""
    try:
        document = load_yaml(path)
    except ProblemError as exc:
        return None, exc.problems
    lines = path.read_text(encoding="utf-8").splitlines()  # read as load_yaml did: for columns
    compiler = _Compiler(str(path), environment or make_environment(), lines)
    scenario = compiler.scenario(path, document)
    if scenario is not None:
        scenario.names = sorted(compiler.names)
        scenario.expressions = compiler.expressions
        scenario.recommendations = compiler.recommendations
    return scenario, compiler.problems


def scenario_files(directory: Path) -> list[Path]:
    """The scenario files of a folder: every `*.yaml` and `*.yml`, in name order."""
    if not directory.is_dir():
        return []
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def compile_scenarios(
    paths: list[Path], environment: Sandbox | None = None
) -> tuple[list[Scenario], list[Problem]]:
    """Compile scenario files; returns the usable ones and the problems of all of them."""
    problems: list[Problem] = []
    scenarios: dict[str, Scenario] = {}
    for path in paths:
        scenario, found = compile_scenario(path, environment)
        problems.extend(found)
        if scenario is None or any(p.severity == "error" for p in found):
            continue
        if scenario.id in scenarios:
            line, col = value_position(scenario.document, "scenario")
            problems.append(
                Problem(
                    str(path),
                    line,
                    col,
                    f"scenario id '{scenario.id}' is already used by {scenarios[scenario.id].file}",
                )
            )
            continue
        scenarios[scenario.id] = scenario
    return list(scenarios.values()), problems


def load_scenarios(paths: list[Path], environment: Sandbox | None = None) -> list[Scenario]:
    """Compile scenario files; raises `ProblemError` if any has an error."""
    scenarios, problems = compile_scenarios(paths, environment)
    if any(p.severity == "error" for p in problems):
        raise ProblemError(problems)
    return scenarios
