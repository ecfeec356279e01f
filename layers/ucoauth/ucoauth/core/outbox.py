"""Announcing state changes on EventBridge, in generation order, without losing an event.

The happy path is one PutEvents. When it fails, the event is parked on the installation item
(``pending_event``: a JSON list, oldest first) and published later: the refresh worker relays
what is parked (the planner finds inactive installations with parked events through the due
index; active ones at their next refresh). Whoever announces a new event first publishes what is
parked, in order, and parks the new one behind anything it could not publish, so an older
generation's event never follows a newer one's.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.base.observability import logger, metrics

if TYPE_CHECKING:
    from ucoauth.adapters.installations.model import Installation
    from ucoauth.adapters.services import Services

Event = tuple[str, dict[str, Any]]


def parked_events(raw: str | None) -> list[Event]:
    """The events parked on an item, oldest first (unreadable entries are dropped and logged)."""
    if not raw:
        return []
    try:
        parsed = json.loads(raw)
    except ValueError:
        logger.error("unreadable parked events dropped")
        return []
    entries = parsed if isinstance(parsed, list) else [parsed]
    out: list[Event] = []
    for entry in entries:
        try:
            out.append((str(entry["detail_type"]), dict(entry["detail"])))
        except (KeyError, TypeError, ValueError):
            logger.error("unreadable parked event dropped")
    return out


def _encode(events: list[Event]) -> str:
    return json.dumps([{"detail_type": t, "detail": d} for t, d in events], separators=(",", ":"))


def _publish_in_order(services: Services, events: list[Event]) -> list[Event]:
    """Publish oldest first; stop at the first refusal. Returns what is left, in order."""
    for index, (detail_type, detail) in enumerate(events):
        if not services.events.publish(detail_type, detail):
            return events[index:]
    return []


def announce(
    services: Services,
    merchant_id: str,
    detail_type: str,
    detail: dict[str, Any],
    *,
    version: int,
    active: bool,
    parked: str | None = None,
    then: tuple[Event, ...] = (),
) -> None:
    """Publish what is parked (``parked``: the item's ``pending_event`` at ``version``), then this
    event (and the events ``then``, in order); whatever could not be published is parked, in
    order, on the item at ``version``."""
    earlier = parked_events(parked)
    left = _publish_in_order(services, [*earlier, (detail_type, detail), *then])
    if not left and not earlier:
        return
    try:
        if left:
            stored = services.installations.park_events(
                merchant_id, events=_encode(left), version=version, active=active, now=services.now()
            )
        else:
            services.installations.clear_event(merchant_id, version=version, active=active)
            stored = True
    except (ClientError, BotoCoreError) as exc:
        stored = False
        logger.error("events could not be parked", merchant_id=merchant_id, error=type(exc).__name__)
    if not left:
        logger.info("parked events relayed", merchant_id=merchant_id, count=len(earlier))
    elif stored:
        logger.warning("event parked for a later relay", merchant_id=merchant_id, detail_type=detail_type)
    else:
        metrics.add_metric(name="EventLost", unit="Count", value=1)
        logger.error("event lost", merchant_id=merchant_id, detail_type=detail_type)


def relay(services: Services, installation: Installation) -> bool:
    """Publish an installation's parked events in order; True once all are published and cleared."""
    from ucoauth.adapters.installations.model import ACTIVE

    events = parked_events(installation.pending_event)
    left = _publish_in_order(services, events)
    active = installation.status == ACTIVE
    if left:
        if len(left) < len(events):
            services.installations.park_events(
                installation.merchant_id,
                events=_encode(left),
                version=installation.version,
                active=active,
                now=services.now(),
            )
        return False
    services.installations.clear_event(installation.merchant_id, version=installation.version, active=active)
    logger.info("parked events relayed", merchant_id=installation.merchant_id, count=len(events))
    return True
