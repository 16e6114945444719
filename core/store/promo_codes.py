"""Promo codes: every personal code issued (one per message, each code once whatever its
case: the database guarantees both), and its redemption. The rules are core/promo_codes.py."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from boomerang.clock import to_iso
from boomerang.store import rows
from boomerang.store.quarantine import Quarantine

_COLUMNS = (
    "code",
    "provider",
    "customer_id",
    "message_id",
    "scenario",
    "step",
    "percent",
    "amount",
    "currency",
    "expires_at",
    "issued_at",
)


class PromoCodes(Quarantine):
    """The `promo_codes` table."""

    def keep_promo_codes(self, codes: Sequence[dict[str, Any]]) -> dict[str, str]:
        """Keep issued codes (rows as `promo_codes.issued` gives them) in one statement; returns
        the code each of their messages has now: the one given, or the one it had already (a
        message never gets a second code). A message missing from the answer was given a code
        that is taken: issue it another."""
        marks = ", ".join("?" for _ in _COLUMNS)
        self.db.conn.executemany(
            f"INSERT OR IGNORE INTO promo_codes ({', '.join(_COLUMNS)}) VALUES ({marks})",
            [[row.get(column) for column in _COLUMNS] for row in codes],
        )
        found = self.db.execute(
            "SELECT message_id, code FROM promo_codes WHERE message_id IN (SELECT value FROM json_each(?))",
            [json.dumps([row["message_id"] for row in codes])],
        )
        return dict(found.fetchall())

    def promo_codes(self, codes: Collection[str]) -> dict[str, dict[str, Any]]:
        """The rows of these codes, by code in capitals, in one query (case does not matter:
        `bmr-7kq4` is `BMR-7KQ4`); unknown codes are left out."""
        found = self._select(
            "SELECT * FROM promo_codes WHERE code IN (SELECT value FROM json_each(?))",
            [json.dumps(list(codes))],
        )
        read = (
            self._read_row("promo_codes", row["code"], lambda row=row: rows.promo_code(row)) for row in found
        )
        return {row["code"].upper(): row for row in read if row is not None}

    def redeem_promo_codes(self, redemptions: Sequence[tuple[str, str]], at: datetime) -> list[str]:
        """Mark codes redeemed by their orders ((code, order id) pairs), each only if it is not
        redeemed yet; returns the codes this marked."""
        marked = []
        for code, order in redemptions:
            changed = self.db.execute(
                "UPDATE promo_codes SET redeemed_at = ?, order_id = ? WHERE code = ? AND redeemed_at IS NULL",
                [to_iso(at), order, code],
            ).rowcount
            if changed:
                marked.append(code)
        return marked

    def issued_promo_codes(
        self, since: datetime | None = None, scenario: str | None = None, provider: str | None = None
    ) -> list[dict[str, Any]]:
        """Codes issued since a moment (all without one), of one scenario and one provider when
        given, oldest first: what `boomerang promo export` prints."""
        wanted = {"scenario": scenario, "provider": provider}
        where = "".join(f" AND {column} = ?" for column, value in wanted.items() if value is not None)
        found = self._select(
            f"SELECT * FROM promo_codes WHERE issued_at >= ?{where} ORDER BY issued_at, code",
            [to_iso(since) if since else "", *(value for value in wanted.values() if value is not None)],
        )
        read = (
            self._read_row("promo_codes", row["code"], lambda row=row: rows.promo_code(row)) for row in found
        )
        return [row for row in read if row is not None]
