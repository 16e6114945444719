"""An installation's whole working set, loaded and cross-checked together.

Config, the plugins' objects, scenarios, templates and segments make one `Project`. The daemon
loads one at start and again on SIGHUP (a project with errors leaves the running one in
place); `check` reports every problem of one; `simulate` runs one on a virtual clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from boomerang.config import Config, load_config
from boomerang.contact_plan import validate_plan
from boomerang.expressions import Expression, ExpressionError, Sandbox, compile_expression, make_environment
from boomerang.model import EVENT_TYPES
from boomerang.names import names_for
from boomerang.outbox import Outbox
from boomerang.plugin_manager import Plugins, Registry, gather, load_plugins
from boomerang.problems import Problem, ProblemError, did_you_mean
from boomerang.rate_limits import LocalRateLimits, RateLimits
from boomerang.recommendations import MAX_LIMIT, strategies, valid_limit
from boomerang.scenarios import Scenario, Step, compile_scenarios, scenario_files
from boomerang.templates import TemplateLibrary, load_templates
from boomerang.yamlfile import value_position


@dataclass
class Project:
    """What the engine runs on."""

    config: Config
    registry: Registry
    scenarios: list[Scenario]
    templates: TemplateLibrary
    environment: Sandbox
    segments: dict[str, Expression] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)
    # The buckets its channels were handed, which dispatch paces their messages with.
    rate_limits: RateLimits = field(default_factory=LocalRateLimits)

    def warm(self) -> None:
        """Compile every template and expression and load the channels' libraries now, not
        on the event loop or the store's thread when first used: for a project that runs.
        `check` needs none of it (it checks what it parsed)."""
        self.templates.warm()
        for scenario in self.scenarios:
            for expression in scenario.expressions:
                expression.compiled()
        for expression in self.segments.values():
            expression.compiled()
        for channel in self.registry.channels.values():
            channel.prepare()


def assemble(
    config: Config,
    plugins: Plugins,
    scenario_paths: list[Path] | None = None,
    rate_limits: RateLimits | None = None,
) -> tuple[Project | None, list[Problem]]:
    """Build a project from a loaded config; returns it (None if unusable) and every problem.
    Its channels and sources get `rate_limits` (by default buckets of their own)."""
    limits = LocalRateLimits() if rate_limits is None else rate_limits
    registry, problems = gather(plugins, config, limits)
    problems.extend(validate_plan(config, registry.channel_kinds))
    environment = make_environment(registry.conditions)
    segments = {}
    for name, source in config.segments.items():
        try:
            segments[name] = compile_expression(source, environment)
        except ExpressionError as exc:
            problems.append(config.problem(("segments", name), f"segment '{name}': {exc}"))
    paths = scenario_files(config.scenarios) if scenario_paths is None else scenario_paths
    scenarios, found = compile_scenarios(paths, environment)
    problems.extend(found)
    templates, found = load_templates(config.templates, registry.conditions, registry.channel_kinds)
    problems.extend(found)
    for scenario in scenarios:
        problems.extend(cross_check(scenario, templates, registry, config, plugins))
        problems.extend(unknown_names(scenario, templates, environment))
    problems.extend(recommendation_problems(scenarios, templates, registry))
    project = Project(config, registry, scenarios, templates, environment, segments, rate_limits=limits)
    project.warnings = [p for p in problems if p.severity != "error"]
    return project, problems


def load_project(config_path: Path, plugins: Plugins, rate_limits: RateLimits | None = None) -> Project:
    """Load config, scenarios, templates and the plugins' objects; raises `ProblemError` on any
    error. The daemon hands over the rate limits of its database (`rate_limits_for`)."""
    config = load_config(config_path)
    project, problems = assemble(config, plugins, rate_limits=rate_limits)
    if project is None or any(p.severity == "error" for p in problems):
        raise ProblemError(problems)
    project.warm()
    if config.outbox is not None:
        project.registry.channels = {
            name: Outbox(channel, config.outbox) for name, channel in project.registry.channels.items()
        }
    return project


def open_project(config_path: Path) -> tuple[Project, Plugins]:
    """Config, plugins and project for a command that runs them; raises `ProblemError` on any error."""
    plugins = load_plugins(load_config(config_path).plugin_dirs)
    return load_project(config_path, plugins), plugins


def known_event_types(registry: Registry) -> set[str]:
    """The normalised event types plus those the source plugins declare."""
    declared = {t for source in registry.sources.values() for t in getattr(source, "event_types", ())}
    return set(EVENT_TYPES) | declared


def cross_check(
    scenario: Scenario, templates: TemplateLibrary, registry: Registry, config: Config, plugins: Plugins
) -> list[Problem]:
    """What a scenario names that does not exist: templates, channels, actions, event types."""
    problems: list[Problem] = []
    file = str(scenario.file)
    known_channels = set(registry.channel_kinds)
    # A channel whose settings are wrong is reported there, once; here it counts as configured.
    configured = set(registry.channels) | set(config.channels)
    events = known_event_types(registry)

    def warn_event(event_type: str | None, line: int, col: int, where: str) -> None:
        if event_type and event_type not in events:
            problems.append(
                Problem(
                    file,
                    line,
                    col,
                    f"'{event_type}' in {where} is not a known event type{did_you_mean(event_type, events)}; "
                    "a custom type is fine if a source sends it",
                    "warning",
                )
            )

    doc = scenario.document
    for key in ("exit_on", "goal"):
        if key in doc:
            line, col = value_position(doc, key)
            types = (
                list(scenario.exit_on)
                if key == "exit_on"
                else [scenario.goal.event if scenario.goal else None]
            )
            for event_type in types:
                warn_event(event_type, line, col, key)
    if scenario.trigger.kind == "event":
        line, col = value_position(doc["trigger"], "event")
        for event_type in scenario.trigger.events:
            warn_event(event_type, line, col, "trigger")
    for step in scenario.walk():
        if step.kind == "wait_for":
            warn_event(step.until_event, step.line, step.col, "wait until")
        if step.kind == "send":
            problems.extend(_check_send(step, file, templates, known_channels, configured))
            provider = (step.promo or {}).get("provider")
            if provider and provider not in registry.promo_providers:
                problems.append(
                    Problem(
                        file,
                        step.line,
                        step.col,
                        f"unknown promo provider '{provider}'"
                        f"{did_you_mean(str(provider), registry.promo_providers)}; "
                        f"registered: {', '.join(sorted(registry.promo_providers)) or 'none'}",
                    )
                )
        if step.kind == "action" and step.action in registry.actions:
            for message in registry.actions[step.action].argument_problems(step.arguments):
                problems.append(Problem(file, step.line, step.col, message))
        elif step.kind == "action":
            problems.append(
                Problem(
                    file,
                    step.line,
                    step.col,
                    f"unknown action '{step.action}'{did_you_mean(step.action or '', registry.actions)}; "
                    f"registered: {', '.join(sorted(registry.actions)) or 'none'}",
                )
            )
    return problems


def unknown_names(scenario: Scenario, templates: TemplateLibrary, environment: Sandbox) -> list[Problem]:
    """Names a scenario's expressions, and the templates it sends, use but cannot get from it.

    A template is judged against each scenario that sends it: one used by a cart scenario and
    an order scenario may name neither `cart` nor `order` (but `data.cart`, or test `is defined`).
    """
    event_types = scenario.trigger.events if scenario.trigger.kind == "event" else None
    functions = environment.globals
    problems = []
    names = names_for(event_types, functions, message=False)
    for use in scenario.names:
        if message := names.problem(use):
            problems.append(Problem(str(scenario.file), use.line, use.col, message))
    names = names_for(event_types, functions, message=True)
    sent = {step.template for step in scenario.walk() if step.kind == "send"}
    for name in sorted(t for t in sent if t):
        template = templates.get(name)
        for part in template.parts.values() if template else ():
            for use in part.names:
                if message := names.problem(use, f" (sent by scenario '{scenario.id}')"):
                    problems.append(Problem(str(part.file), use.line, use.col, message))
    return problems


def recommendation_problems(
    scenarios: list[Scenario], templates: TemplateLibrary, registry: Registry
) -> list[Problem]:
    """The `recommendations()` calls of the templates and of the scenarios' `with:` and `set:`
    values that cannot be answered: a strategy that does not exist or is not written out, a
    limit out of range."""
    known = strategies(registry.recommenders)
    calls = [(str(scenario.file), call) for scenario in scenarios for call in scenario.recommendations]
    for name in templates.names():
        template = templates.get(name)
        for part in template.parts.values() if template else ():
            calls += [(str(part.file), call) for call in part.recommendations]
    problems = []
    for file, call in calls:
        where = (file, call.line, call.col)
        if not isinstance(call.strategy, str):
            quoted = "write the strategy as a quoted name, such as strategy='viewed'"
            problems.append(Problem(*where, f"recommendations(): {quoted}"))
        elif call.strategy not in known:
            problems.append(
                Problem(
                    *where,
                    f"recommendations(): unknown strategy '{call.strategy}'"
                    f"{did_you_mean(call.strategy, known)}; the strategies are {', '.join(known)}",
                )
            )
        if call.limit is not None and not valid_limit(call.limit):
            limit = f"limit must be a whole number from 1 to {MAX_LIMIT}"
            problems.append(Problem(*where, f"recommendations(): {limit}"))
    return problems


def _check_send(
    step: Step, file: str, templates: TemplateLibrary, known: set[str], configured: set[str]
) -> list[Problem]:
    problems = []
    if step.template in templates.broken:
        return problems  # its file's problem is the one to fix
    template = templates.get(step.template or "")
    if template is None:
        problems.append(
            Problem(
                file,
                step.line,
                step.col,
                f"unknown template '{step.template}'{did_you_mean(step.template or '', templates.names())}",
            )
        )
        return problems
    for channel in step.channels or ():
        if channel not in known:
            problems.append(
                Problem(
                    file, step.line, step.col, f"unknown channel '{channel}'{did_you_mean(channel, known)}"
                )
            )
        elif channel not in template.channels():
            problems.append(
                Problem(file, step.line, step.col, f"template '{template.name}' has no {channel} version")
            )
        elif channel not in configured:
            problems.append(
                Problem(
                    file,
                    step.line,
                    step.col,
                    f"channel '{channel}' is not configured: this step will not use it",
                    "warning",
                )
            )
    if not step.channels and not template.channels() & configured:
        problems.append(
            Problem(
                file,
                step.line,
                step.col,
                f"template '{template.name}' has no version for any configured channel "
                f"({', '.join(sorted(configured)) or 'none configured'})",
            )
        )
    return problems
