"""Personal promo codes, the rules: how a code looks, what is kept of one when a message
gets it, which codes an order names, whether one of them may be redeemed, the events that
say so, and the CSV of `boomerang promo export`. Pure functions; the SQL is in
`boomerang.store.promo_codes`, and `Dispatch` (issue) and `Redemptions` (redeem) apply them.

Every code a provider issues for a message is kept in the `promo_codes` table, whichever
provider made it, so that an order using it is recognised and credited to that message.
"""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from boomerang.clock import parse_time, to_iso
from boomerang.model import Event, ProfileUpdate

# Read aloud or typed from an SMS without doubt: no 0/O, no 1/I/L.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
GROUP_LENGTH = 4
# Three groups are 60 bits of chance: nobody guesses a code by trying them at a checkout.
DEFAULT_GROUPS = 3
MAX_PREFIX = 10
# An order naming more codes than this is no shop's order: the rest are not looked at.
MAX_CODES_PER_ORDER = 20
CSV_COLUMNS = (
    "code",
    "value",
    "currency",
    "percent",
    "expires_at",
    "issued_at",
    "customer_id",
    "scenario",
    "step",
    "redeemed_at",
)


def prefix_problem(prefix: Any) -> str | None:
    """What is wrong with a code prefix (letters and digits, at most `MAX_PREFIX`), or None."""
    if not isinstance(prefix, str) or not prefix.isascii() or not prefix.isalnum():
        return "a promo code prefix is letters and digits, such as BMR"
    if len(prefix) > MAX_PREFIX:
        return f"a promo code prefix has at most {MAX_PREFIX} characters"
    return None


def _grouped(characters: str, prefix: str | None) -> str:
    groups = [characters[i : i + GROUP_LENGTH] for i in range(0, len(characters), GROUP_LENGTH)]
    return "-".join([prefix.upper(), *groups] if prefix else groups)


def new_code(prefix: str | None = None, groups: int = DEFAULT_GROUPS) -> str:
    """A fresh unguessable code from `secrets`, grouped by four: `BMR-7KQ4-XW9P-M3RT`."""
    return _grouped("".join(secrets.choice(ALPHABET) for _ in range(groups * GROUP_LENGTH)), prefix)


def sample_code(seed: str, prefix: str | None = None, groups: int = DEFAULT_GROUPS) -> str:
    """A code that looks like `new_code`'s, the same for the same `seed` (simulate, preview),
    and never issued."""
    digest = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big")
    characters = []
    for _ in range(groups * GROUP_LENGTH):
        digest, index = divmod(digest, len(ALPHABET))
        characters.append(ALPHABET[index])
    return _grouped("".join(characters), prefix)


def normalised(code: str) -> str:
    """A code as an order's is compared: without surrounding spaces, in capitals (a customer
    types `bmr-7kq4-xw9p` as readily; the table ignores case)."""
    return code.strip().upper()


def issued(
    code: str,
    provider: str,
    message: dict[str, Any],
    spec: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The `promo_codes` row of a code issued for a message (`message`: its id, customer_id,
    scenario and step), with the value and expiry of the step's `promo:` (`expires` in seconds)."""
    expires = spec.get("expires")
    return {
        "code": code.strip(),
        "provider": provider,
        "customer_id": message["customer_id"],
        "message_id": message["id"],
        "scenario": message.get("scenario"),
        "step": message.get("step"),
        "percent": _number(spec.get("percent")),
        "amount": _number(spec.get("amount")),
        "currency": spec.get("currency") if isinstance(spec.get("currency"), str) else None,
        "expires_at": to_iso(now + timedelta(seconds=expires)) if _number(expires) else None,
        "issued_at": to_iso(now),
    }


def order_codes(data: dict[str, Any]) -> list[str]:
    """The codes an order event's data names, normalised, each once: `order.discount_codes`
    (Shopify's shape: strings or `{code, amount, type}`), `order.coupon` (a string or a list)
    and `order.coupon_lines` (WooCommerce's `{code}` objects)."""
    order = data.get("order")
    if not isinstance(order, dict):
        return []
    named: list[Any] = []
    for key in ("discount_codes", "coupon", "coupon_lines"):
        value = order.get(key)
        named.extend(value if isinstance(value, list) else [value])
    codes = (item.get("code") if isinstance(item, dict) else item for item in named)
    found = dict.fromkeys(normalised(code) for code in codes if isinstance(code, str) and code.strip())
    return list(found)[:MAX_CODES_PER_ORDER]


def order_id(event: Event) -> str:
    """The id of an order event's order (`order.id`, else `order.number`), else the event's."""
    order = event.data.get("order")
    if isinstance(order, dict):
        for key in ("id", "number"):
            if isinstance(order.get(key), str | int) and not isinstance(order.get(key), bool):
                return str(order[key])
    return event.id


def refusal(row: dict[str, Any] | None, customer_id: str, order: str, at: datetime) -> str | None:
    """Why an order (`order`, by `customer_id`, placed `at`) may not redeem a code (`row`, its
    `promo_codes` row, None if unknown); None when it may, and "" when this very order
    redeemed it already (a replay: nothing to do)."""
    if row is None:
        return "unknown code"
    if row["redeemed_at"]:
        return "" if row["order_id"] == order else "already redeemed by another order"
    if row["customer_id"] != customer_id:
        return "issued to another customer"
    if row["expires_at"] and parse_time(row["expires_at"]) < at:
        return "expired"
    return None


def value(row: dict[str, Any]) -> dict[str, Any]:
    """A code's value as events and templates show it: `{percent}` or `{amount, currency}`."""
    if row.get("percent") is not None:
        return {"percent": row["percent"]}
    if row.get("amount") is not None:
        return {"amount": row["amount"], "currency": row.get("currency")}
    return {}


def redeemed_event(row: dict[str, Any], order: str, at: datetime) -> Event:
    """`promo.redeemed` for the code's customer, linked to the message that carried it; its id
    names the code, so a code is redeemed once however often its order comes back."""
    message = {"id": row["message_id"], "scenario": row["scenario"], "step": row["step"]}
    return Event(
        id=f"promo.redeemed:{row['code']}",
        type="promo.redeemed",
        at=at,
        profile=ProfileUpdate(id=row["customer_id"]),
        data={
            "code": row["code"],
            "order_id": order,
            "message_id": row["message_id"],
            "scenario": row["scenario"],
            "step": row["step"],
            "value": value(row),
            "message": message,
        },
        source="promo",
    )


def rejected_event(code: str, reason: str, order_event: Event, order: str) -> Event:
    """`promo.rejected` for the customer whose order named a code it may not redeem; its id
    names the order and the code, so the same order coming back is reported once."""
    return Event(
        id=f"promo.rejected:{order}:{code}",
        type="promo.rejected",
        at=order_event.at,
        profile=ProfileUpdate(id=order_event.customer_id),
        data={"code": code, "order_id": order, "reason": reason},
        source="promo",
    )


def export_csv(rows: Iterable[dict[str, Any]]) -> str:
    """Issued codes as CSV (`CSV_COLUMNS`): `value` is the percentage or the amount, `percent`
    says which (`true`/`false`), `currency` goes with an amount; the customer by id, never by
    address; times in UTC to the second."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        percent = row.get("percent") is not None
        amount = row["percent"] if percent else row.get("amount")
        writer.writerow(
            [
                row["code"],
                "" if amount is None else f"{amount:g}",
                "" if percent else row.get("currency") or "",
                "true" if percent else "false",
                _to_the_second(row.get("expires_at")),
                _to_the_second(row["issued_at"]),
                row["customer_id"],
                row.get("scenario") or "",
                row.get("step") or "",
                _to_the_second(row.get("redeemed_at")),
            ]
        )
    return out.getvalue()


def _to_the_second(stamp: str | None) -> str:
    return parse_time(stamp).strftime("%Y-%m-%dT%H:%M:%SZ") if stamp else ""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
