"""Handing a message to its channel and telling the plugins how it went."""

from __future__ import annotations

import logging

from boomerang.model import Delivery, DeliveryStatus, Message
from boomerang.plugin_manager import Plugins, Registry, notify

log = logging.getLogger(__name__)


async def send_message(plugins: Plugins, registry: Registry, message: Message) -> Delivery:
    """Send through the message's channel; a channel that raises is treated as 'retry later'."""
    channel = registry.channels.get(message.channel)
    if channel is None:
        delivery = Delivery(DeliveryStatus.FAILED, detail=f"channel '{message.channel}' is not configured")
    else:
        try:
            delivery = await channel.send(message)
        except Exception as exc:
            log.exception("channel %s raised while sending message %s", message.channel, message.id)
            delivery = Delivery(DeliveryStatus.RETRY, detail=f"{type(exc).__name__}: {exc}")
    log.info(
        "message %s to customer %s via %s: %s",
        message.id,
        message.customer_id,
        message.channel,
        delivery.status.value,
    )
    await notify(plugins, "message_finished", message=message, delivery=delivery)
    return delivery
