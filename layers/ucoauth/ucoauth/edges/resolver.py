"""The HTTP functions' router and response: Powertools' ``APIGatewayHttpResolver``, loaded without
the rest of ``aws_lambda_powertools.event_handler`` (see :mod:`ucoauth.edges.powertools`)."""

from __future__ import annotations

from ucoauth.edges.powertools import DATA_CLASSES, EVENT_HANDLER, lazy_packages

lazy_packages(EVENT_HANDLER, DATA_CLASSES)

from aws_lambda_powertools.event_handler.api_gateway import (  # noqa: E402 - after the registration
    APIGatewayHttpResolver,
    Response,
)

__all__ = ["APIGatewayHttpResolver", "Response"]
