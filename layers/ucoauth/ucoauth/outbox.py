"""Announcing state changes on EventBridge without losing an event when EventBridge fails.

The happy path is one PutEvents. When it fails, the event is parked on the installation item
(a one-slot outbox) and the refresh worker publishes it later: the planner finds inactive
installations with a parked event through the due index; active ones at their next refresh.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.observability import logger, metrics

if TYPE_CHECKING:
    from ucoauth.services import Services
    from ucoauth.store import Installation


def announce(
    services: Services,
    merchant_id: str,
    detail_type: str,
    detail: dict[str, Any],
    *,
    version: int,
    active: bool,
) -> None:
    """Publish now, or park the event on the item (at ``version``) for a later relay."""
    if services.events.publish(detail_type, detail):
        return
    event = json.dumps({"detail_type": detail_type, "detail": detail}, separators=(",", ":"))
    try:
        parked = services.installations.park_event(
            merchant_id, event=event, version=version, active=active, now=services.now()
        )
    except (ClientError, BotoCoreError) as exc:
        parked = False
        logger.error("event could not be parked", merchant_id=merchant_id, error=type(exc).__name__)
    if parked:
        logger.warning("event parked for a later relay", merchant_id=merchant_id, detail_type=detail_type)
    else:
        metrics.add_metric(name="EventLost", unit="Count", value=1)
        logger.error("event lost", merchant_id=merchant_id, detail_type=detail_type)


def relay(services: Services, installation: Installation) -> bool:
    """Publish an installation's parked event; True once it is published and cleared."""
    if not installation.pending_event:
        return True
    try:
        parked = json.loads(installation.pending_event)
        detail_type, detail = str(parked["detail_type"]), dict(parked["detail"])
    except (ValueError, KeyError, TypeError):
        logger.error("unreadable parked event dropped", merchant_id=installation.merchant_id)
        detail_type, detail = "", {}
    if detail_type and not services.events.publish(detail_type, detail):
        return False
    from ucoauth.store import ACTIVE

    services.installations.clear_event(
        installation.merchant_id, version=installation.version, active=installation.status == ACTIVE
    )
    logger.info("parked event relayed", merchant_id=installation.merchant_id, detail_type=detail_type)
    return True
