"""The HTTP functions' router and response: Powertools' ``APIGatewayHttpResolver``."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import APIGatewayHttpResolver, Response

__all__ = ["APIGatewayHttpResolver", "Response"]
