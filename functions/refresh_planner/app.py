"""Scheduled refresh planner: due installations (sparse sharded index) → refresh queue."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from ucoauth.adapters.queues import send_refresh_requests
from ucoauth.adapters.services import get_services
from ucoauth.base.observability import logger, metrics
from ucoauth.usecases.refresh import plan


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    services = get_services()
    stats: dict[str, int] = {}
    planned = send_refresh_requests(services.settings.refresh_queue_url, plan(services, stats=stats))
    metrics.add_metric(name="RefreshPlanned", unit="Count", value=planned)
    logger.info("refresh planned", extra={"planned": planned, **stats})
    return {"planned": planned, **stats}
