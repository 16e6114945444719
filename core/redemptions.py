"""Redemptions: an `order.placed` that names personal promo codes redeems them, on the store's
thread, in the transaction that acts on the order (the rules are `boomerang.promo_codes`).

A code this customer was given, unexpired and not yet redeemed, is marked redeemed by the
order and a `promo.redeemed` event is stored for the customer, linked to the message that
carried the code; scenarios may start or end on it. A code that is unknown, expired,
another customer's or redeemed by another order is not redeemed: a `promo.rejected` event
with the reason is stored, and logged without personal data. The same order coming back
(a replayed webhook, an import) redeems nothing twice. Both events are acted on by the
engine's next pass over stored events, as feedback events are.
"""

from __future__ import annotations

import logging
from datetime import datetime

from boomerang import promo_codes
from boomerang.journeys import Journeys
from boomerang.model import Event

log = logging.getLogger(__name__)


class Redemptions(Journeys):
    """Promo codes named by orders, redeemed or rejected; runs on the store's thread."""

    def _acts_on(self, event_type: str) -> bool:
        """An order may redeem promo codes (`on_event`)."""
        return event_type == "order.placed" or super()._acts_on(event_type)

    def on_event(self, event: Event, now: datetime) -> None:
        """Redeem the codes an order names, then act on the order as on any event."""
        if event.type == "order.placed" and event.customer_id:
            codes = promo_codes.order_codes(event.data)
            if codes:
                self._redeem(event, event.customer_id, codes, now)
        super().on_event(event, now)

    def _redeem(self, event: Event, customer_id: str, codes: list[str], now: datetime) -> None:
        order = promo_codes.order_id(event)
        rows = self.store.promo_codes(codes)
        accepted, rejected = [], []
        for code in codes:
            why = promo_codes.refusal(rows.get(code), customer_id, order, event.at)
            if why is None:
                accepted.append(rows[code])
            elif why:  # "" is this order's own redemption coming back: nothing to do
                rejected.append((code, why))
        marked = set(self.store.redeem_promo_codes([(row["code"], order) for row in accepted], event.at))
        events = [
            promo_codes.redeemed_event(row, order, event.at) for row in accepted if row["code"] in marked
        ]
        events.extend(promo_codes.rejected_event(code, why, event, order) for code, why in rejected)
        if not events:
            return
        for stored in self.store.ingest(events, now):  # the new ones: a replayed order says nothing
            if stored.type == "promo.rejected":
                reason = stored.data["reason"]
                log.info("order event %s named a promo code that is not redeemed: %s", event.id, reason)
