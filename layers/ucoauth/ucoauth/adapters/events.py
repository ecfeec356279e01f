"""Domain events on EventBridge (source ``ultracart.oauth``). Details never carry a secret."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters import aws
from ucoauth.base.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

SOURCE = "ultracart.oauth"
INSTALLATION_COMPLETED = "Installation Completed"
REAUTHORIZATION_REQUIRED = "Reauthorization Required"
INSTALLATION_REMOVED = "Installation Removed"
# Tokens an earlier holder could not store were recovered after a reauthorization was announced:
# the merchant does not have to install again after all.
INSTALLATION_RESTORED = "Installation Restored"
# An install session linked a merchant already linked to one of the app's accounts to another.
INSTALLATION_RELINKED = "Installation Relinked"


class EventPublisher:
    """Publishes one event per call; a failure is logged and counted, never raised.

    The state change it announces is already stored, so failing the request (and asking
    the merchant to start again) would do more harm than a missed notification.
    """

    def __init__(self, bus_name: str, *, client: Callable[[], EventBridgeClient] = aws.events) -> None:
        self.bus_name = bus_name
        self._events = client

    def publish(self, detail_type: str, detail: dict[str, Any]) -> bool:
        """Put one event on the bus; True when EventBridge accepted it."""
        try:
            answer = self._events().put_events(
                Entries=[
                    {
                        "Source": SOURCE,
                        "DetailType": detail_type,
                        "Detail": json.dumps(detail, separators=(",", ":")),
                        "EventBusName": self.bus_name,
                    }
                ]
            )
        except (ClientError, BotoCoreError) as exc:
            logger.error("event not published", detail_type=detail_type, error=type(exc).__name__)
            metrics.add_metric(name="EventPublishFailed", unit="Count", value=1)
            return False
        if answer.get("FailedEntryCount"):
            logger.error("event rejected by EventBridge", detail_type=detail_type)
            metrics.add_metric(name="EventPublishFailed", unit="Count", value=1)
            return False
        return True
