"""Actions for staff in Bitrix24 (seed S20): a call or meeting to arrange, a deal's stage or
responsible to change, from a scenario's `action:` steps.

They use the inbound webhook of `sources.bitrix24` (its `rest_url`, shared rate limit), and are
there whenever that source is configured:

```yaml
steps:
  - action: bitrix.create_task          # crm.activity.todo.add, bound to the deal
    with: {deal_id: "{{ customer.attributes.bitrix24_deal_id }}", kind: call, due_in: 2h,
           responsible_id: 7, title: "Call about the cart", description: "{{ cart.total }} RUB left"}
  - action: bitrix.set_stage            # crm.deal.update STAGE_ID
    with: {deal_id: "{{ deal.id }}", stage: PREPARATION}
  - action: bitrix.set_responsible      # crm.deal.update ASSIGNED_BY_ID
    with: {deal_id: "{{ deal.id }}", user_id: 7}
```

`create_task` takes `kind` (`call`, the default, or `meeting`: the title's default), a
`deadline` (ISO 8601) or `due_in` (a duration, default 2h), and optionally `responsible_id`,
`title`, `description`. A wrong argument, or a deal or user Bitrix24 does not have, fails the
step for good (`ActionFailed(retry=False)`); Bitrix24 unreachable, busy
(`QUERY_LIMIT_EXCEEDED` past its own retries) or failing with a 5xx fails it for now, and the
job is tried again under the retry policy (six attempts over about a quarter of an hour).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from boomerang import hookimpl
from boomerang.kinds import Action, ActionFailed
from boomerang.plugin_api import Config, ProblemError, RateLimits, parse_duration, parse_time
from boomerang.plugins.sources.bitrix24_rest import Bitrix24Error, Bitrix24Rest, Bucket, bucket_for
from boomerang.plugins.sources.bitrix24_settings import read_settings

DEAL = 2  # crm.activity.todo.add's ownerTypeId of a deal
TITLES = {"call": "Call the customer", "meeting": "Meeting with the customer"}
_STAGE = re.compile(r"^[A-Za-z0-9_:]{1,50}$")


class BitrixActions:
    """The `bitrix.*` actions of one portal."""

    def __init__(self, rest_url: str, bucket: Bucket):
        self.rest_url = rest_url
        self.bucket = bucket

    def actions(self) -> list[Action]:
        """The three actions, by their names in scenarios."""
        return [
            Action("bitrix.create_task", self.create_task, "a call or meeting for staff, bound to the deal"),
            Action("bitrix.set_stage", self.set_stage, "move a deal to another stage"),
            Action("bitrix.set_responsible", self.set_responsible, "give a deal to another person"),
        ]

    async def create_task(
        self,
        deal_id: Any = None,
        kind: str = "call",
        deadline: Any = None,
        due_in: Any = "2h",
        responsible_id: Any = None,
        title: Any = None,
        description: Any = "",
        **unknown: Any,
    ) -> dict[str, Any]:
        """`crm.activity.todo.add` on the deal; returns the new activity's id."""
        _no_unknown("bitrix.create_task", unknown)
        if kind not in TITLES:
            raise ActionFailed(f"kind must be {' or '.join(TITLES)}, not {kind!r}", retry=False)
        params = {
            "ownerTypeId": DEAL,
            "ownerId": _id(deal_id, "deal_id"),
            "deadline": _deadline(deadline, due_in),
            "title": str(title) if title else TITLES[kind],
            "description": str(description or ""),
        }
        if responsible_id not in (None, ""):
            params["responsibleId"] = _id(responsible_id, "responsible_id")
        result = await self._call("crm.activity.todo.add", params)
        return {"activity_id": result.get("id") if isinstance(result, dict) else result}

    async def set_stage(self, deal_id: Any = None, stage: Any = None, **unknown: Any) -> dict[str, Any]:
        """`crm.deal.update` with the deal's new `STAGE_ID`."""
        _no_unknown("bitrix.set_stage", unknown)
        if not isinstance(stage, str) or not _STAGE.match(stage):
            raise ActionFailed(
                f"stage must be a stage id such as WON or C1:PREPARATION, not {stage!r}", retry=False
            )
        deal = _id(deal_id, "deal_id")
        await self._call("crm.deal.update", {"id": deal, "fields": {"STAGE_ID": stage}})
        return {"deal_id": deal, "stage": stage}

    async def set_responsible(
        self, deal_id: Any = None, user_id: Any = None, **unknown: Any
    ) -> dict[str, Any]:
        """`crm.deal.update` with the deal's new `ASSIGNED_BY_ID`."""
        _no_unknown("bitrix.set_responsible", unknown)
        deal, user = _id(deal_id, "deal_id"), _id(user_id, "user_id")
        await self._call("crm.deal.update", {"id": deal, "fields": {"ASSIGNED_BY_ID": user}})
        return {"deal_id": deal, "user_id": user}

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        # A client (and its connections) per call: actions are few, and nothing closes them.
        async with Bitrix24Rest(self.rest_url, self.bucket) as rest:
            try:
                return await rest.call(method, params)
            except Bitrix24Error as exc:
                raise ActionFailed(str(exc), retry=exc.retry) from None


def _no_unknown(action: str, unknown: dict[str, Any]) -> None:
    if unknown:
        raise ActionFailed(f"{action} takes no argument {', '.join(sorted(unknown))}", retry=False)


def _id(value: Any, name: str) -> int:
    """A Bitrix24 record id given as a number or as text (a rendered template)."""
    text = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not text.isdigit() or not 0 < int(text) < 2**63:
        raise ActionFailed(f"{name} must be a Bitrix24 id (a whole number), not {value!r}", retry=False)
    return int(text)


def _deadline(deadline: Any, due_in: Any) -> str:
    """The todo's deadline in ISO 8601: `deadline` as given, else `due_in` from now."""
    try:
        if deadline not in (None, ""):
            moment = deadline if isinstance(deadline, datetime) else parse_time(str(deadline))
        else:
            moment = datetime.now(UTC) + parse_duration(str(due_in))
    except ValueError as exc:
        raise ActionFailed(f"deadline: {exc}", retry=False) from None
    return moment.astimezone(UTC).isoformat(timespec="seconds")


@hookimpl
def register_actions(config: Config, rate_limits: RateLimits) -> list[Action]:
    """The `bitrix.*` actions, when `sources.bitrix24` is configured: their requests share the
    portal's bucket with the source's, across daemons."""
    if "bitrix24" not in config.sources:
        return []
    try:
        settings = read_settings(config)
    except ProblemError:
        return []  # the source's registration reports the problems, once
    bucket = bucket_for(settings.rest_url, settings.requests_per_second, rate_limits)
    return BitrixActions(settings.rest_url, bucket).actions()
