"""An installation's whole working set — config, plugins' objects, scenarios — loaded together.

The daemon loads a project at start and again on SIGHUP; a project that does not load
leaves the running one in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from boomerang.config import Config, load_config
from boomerang.outbox import Outbox
from boomerang.plugin_manager import Plugins, Registry, collect
from boomerang.problems import Problem, ProblemError
from boomerang.scenarios import Scenario, load_scenarios, scenario_files


@dataclass
class Project:
    """What the engine runs on."""

    config: Config
    registry: Registry
    scenarios: list[Scenario]


def load_project(config_path: Path, plugins: Plugins) -> Project:
    """Load config, scenarios and the plugins' objects; raises `ProblemError` listing everything wrong."""
    config = load_config(config_path)
    problems: list[Problem] = []
    registry = Registry()
    try:
        registry = collect(plugins, config)
    except ProblemError as exc:
        problems.extend(exc.problems)
    scenarios: list[Scenario] = []
    try:
        scenarios = load_scenarios(scenario_files(config.scenarios))
    except ProblemError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ProblemError(problems)
    if config.outbox is not None:
        registry.channels = {
            name: Outbox(channel, config.outbox) for name, channel in registry.channels.items()
        }
    return Project(config=config, registry=registry, scenarios=scenarios)
