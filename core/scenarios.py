"""Scenario YAML → validated scenario objects, with `file:line:col` for every problem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from boomerang.model import CATEGORIES
from boomerang.problems import Problem, ProblemError, did_you_mean
from boomerang.yamlfile import key_position, load_yaml, value_position

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


@dataclass
class Scenario:
    """One scenario file, validated."""

    id: str
    file: Path
    category: str
    description: str
    document: CommentedMap


def load_scenario(path: Path) -> Scenario:
    """Read one scenario file; raises `ProblemError` with every problem in it."""
    document = load_yaml(path)
    file = str(path)
    problems: list[Problem] = []

    def error(position: tuple[int, int], message: str) -> None:
        problems.append(Problem(file, position[0], position[1], message))

    if not isinstance(document, CommentedMap):
        raise ProblemError(
            [Problem(file, 1, 1, "a scenario must be a mapping starting with 'scenario: <id>'")]
        )
    for key in document:
        if key not in SCENARIO_KEYS:
            error(key_position(document, key), f"unknown key '{key}'{did_you_mean(str(key), SCENARIO_KEYS)}")
    scenario_id = document.get("scenario")
    if not isinstance(scenario_id, str) or not scenario_id.strip():
        error((1, 1), "'scenario: <id>' is required")
    category = document.get("category", "trigger")
    if category not in CATEGORIES:
        error(
            value_position(document, "category"),
            f"category must be one of {', '.join(CATEGORIES)}{did_you_mean(str(category), CATEGORIES)}",
        )
    if not isinstance(document.get("trigger"), CommentedMap):
        error(
            value_position(document, "trigger") if "trigger" in document else (1, 1),
            "'trigger' is required: {event: <type>}, {schedule: <cron>} or {date: customer.<field>}",
        )
    if not isinstance(document.get("steps"), CommentedSeq):
        error(
            value_position(document, "steps") if "steps" in document else (1, 1),
            "'steps' is required: a list of steps",
        )
    if problems:
        raise ProblemError(problems)
    return Scenario(
        id=str(scenario_id),
        file=path,
        category=str(category),
        description=str(document.get("description", "")),
        document=document,
    )


def scenario_files(directory: Path) -> list[Path]:
    """The scenario files of a folder: every `*.yaml` and `*.yml`, in name order."""
    if not directory.is_dir():
        return []
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def load_scenarios(paths: list[Path]) -> list[Scenario]:
    """Load scenario files; raises `ProblemError` with the problems of all of them."""
    problems: list[Problem] = []
    scenarios: dict[str, Scenario] = {}
    for path in paths:
        try:
            scenario = load_scenario(path)
        except ProblemError as exc:
            problems.extend(exc.problems)
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
    if problems:
        raise ProblemError(problems)
    return list(scenarios.values())
