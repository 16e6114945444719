"""`promo: {provider: local, percent: 10, expires: 48h}`: personal codes made by Boomerang
itself, for shops without a discount API (or that import codes by hand, `boomerang promo
export`).

A code is drawn with `secrets` from an alphabet without 0/O and 1/I/L, grouped by four, with
an optional prefix: `BMR-7KQ4-XW9P-M3RT`. The core keeps it with the message (customer,
value, expiry) in its `promo_codes` table, where the database refuses a code twice; an order
that names it redeems it. Settings, all optional:

    promo_providers:
      local: {prefix: BMR, groups: 3}   # a step's own `promo: {prefix: ...}` wins
"""

from __future__ import annotations

from typing import Any

from boomerang import hookimpl
from boomerang.kinds import PromoProvider
from boomerang.plugin_api import (
    DEFAULT_GROUPS,
    Config,
    Customer,
    SettingsCheck,
    new_code,
    prefix_problem,
    sample_code,
)

SETTINGS = ("prefix", "groups")
GROUPS = range(2, 7)  # 2 groups of four (40 bits) to 6


class LocalPromoProvider(PromoProvider):
    """Unguessable personal codes, kept in Boomerang's own database."""

    name = "local"

    def __init__(self, prefix: str | None = None, groups: int = DEFAULT_GROUPS):
        self.prefix = prefix
        self.groups = groups

    def _prefix(self, spec: dict[str, Any]) -> str | None:
        return spec.get("prefix") or self.prefix

    async def issue(self, customer: Customer, spec: dict[str, Any]) -> str:
        """A fresh code; the core keeps it and asks again in the unlikely case it is taken."""
        return new_code(self._prefix(spec), self.groups)

    def sample(self, spec: dict[str, Any], seed: str) -> str:
        """A code of the same look for `simulate` and `preview`, the same for the same seed."""
        return sample_code(seed, self._prefix(spec), self.groups)


def read_settings(config: Config) -> LocalPromoProvider:
    """Validate `promo_providers.local`; raises `ProblemError` pointing at every wrong setting."""
    check = SettingsCheck(config, "promo_providers", "local", SETTINGS)
    prefix = check.settings.get("prefix")
    if prefix is not None and (problem := prefix_problem(prefix)):
        check.problem("prefix", f"'prefix': {problem}")
    groups = check.settings.get("groups", DEFAULT_GROUPS)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups not in GROUPS:
        check.problem("groups", f"'groups' is a whole number from {GROUPS.start} to {GROUPS.stop - 1}")
    check.done()
    return LocalPromoProvider(prefix, groups)


@hookimpl
def register_promo_providers(config: Config) -> list[PromoProvider]:
    """The `local` provider, always there; `promo_providers.local` may set its prefix and length."""
    return [read_settings(config)]
