"""The contact plan: whether, when and over which channel a message goes, and why.

Every decision is returned with its reasons so that it can be stored with the message and
shown by `simulate` and `explain`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from boomerang.kinds import Channel
from boomerang.model import Customer

DEFAULT_PRIORITIES = {"transactional": 100, "trigger": 50, "promo": 10}


@dataclass
class Decision:
    """The plan's answer for one message: the channel to use (or none), and why."""

    channel: str | None
    reason: str
    passed_over: dict[str, str] = field(default_factory=dict)

    def explain(self) -> str:
        """One line: the choice and what was passed over."""
        skipped = "; ".join(f"{name}: {why}" for name, why in self.passed_over.items())
        return f"{self.reason}" + (f" (passed over {skipped})" if skipped else "")


class ContactPlan:
    """The rules of `contact_plan:` in the config."""

    def __init__(self, settings: dict[str, Any], channels: dict[str, Channel]):
        self.settings = settings
        self.channels = channels
        preferred = list((settings.get("channels") or {}).keys())
        self.order = [name for name in preferred if name in channels] + [
            name for name in channels if name not in preferred
        ]
        self.priorities = {**DEFAULT_PRIORITIES, **(settings.get("priorities") or {})}

    def priority(self, category: str) -> int:
        """The queue priority of a message category."""
        return int(self.priorities.get(category, 0))

    def decide(self, customer: Customer, candidates: list[str] | None, category: str) -> Decision:
        """Pick the first reachable channel among the candidates, in the plan's order."""
        wanted = [name for name in self.order if candidates is None or name in candidates]
        passed: dict[str, str] = {}
        for name in candidates or []:
            if name not in self.channels:
                passed[name] = "not configured"
        for name in wanted:
            channel = self.channels[name]
            if not channel.address(customer):
                passed[name] = "no address"
            elif name in customer.opt_outs or "all" in customer.opt_outs:
                passed[name] = "opted out"  # a hard opt-out binds transactional messages too
            elif name in customer.unreachable:
                passed[name] = f"address known bad ({customer.unreachable[name]})"
            elif customer.consents.get(name) is False and category != "transactional":
                passed[name] = "no marketing consent"
            else:
                return Decision(name, f"{name}: first reachable channel", passed)
        return Decision(None, "no reachable channel", passed)
