"""The redacting log formatter: the last line of defence against a leaked secret."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from aws_lambda_powertools import Logger

from ucoauth.base.observability import REDACTED, RedactingFormatter, redact, redact_text

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "Zx9-aQ3_Lm8pW2rT6yUi0oPs4dFg7hJk1lZc5vBn"  # token_urlsafe(30)-shaped


def test_token_shaped_text_is_masked_but_ids_survive() -> None:
    text = f"refresh for DEMO1 failed with {TOKEN} at 2026-11-27T20:00:00Z"
    text += " req 0d5f1d9e-2b6a-4c7e-9d3f-8a1b2c3d4e5f"
    out = redact_text(text)
    assert TOKEN not in out
    assert "DEMO1" in out
    assert "2026-11-27T20:00:00Z" in out
    assert "0d5f1d9e-2b6a-4c7e-9d3f-8a1b2c3d4e5f" in out


def test_query_string_secrets_are_masked() -> None:
    out = redact_text("GET /oauth/callback?code=abc123&state=short&merchant=DEMO1")
    assert "abc123" not in out
    assert "state=short" not in out
    assert "merchant=DEMO1" in out


def test_secret_keys_are_masked_whatever_their_value() -> None:
    payload = {"access_token": "x", "nested": {"client_secret": "y", "merchant_id": "DEMO1"}, "list": [TOKEN]}
    out = redact(payload)
    assert out["access_token"] == REDACTED
    assert out["nested"]["client_secret"] == REDACTED
    assert out["nested"]["merchant_id"] == "DEMO1"
    assert out["list"] == [REDACTED]


def test_a_log_line_with_a_token_in_an_extra_and_an_exception_leaks_nothing() -> None:
    stream = io.StringIO()
    log = Logger(
        service="t", logger_formatter=RedactingFormatter(), logger_handler=logging.StreamHandler(stream)
    )
    try:
        raise ValueError(f"upstream said {TOKEN}")
    except ValueError:
        log.exception("boom", extra={"refresh_token": TOKEN, "note": f"value {TOKEN}"})
    line = stream.getvalue()
    assert TOKEN not in line
    record = json.loads(line)
    assert record["refresh_token"] == REDACTED
    assert record["message"] == "boom"


def _service_seen(environment: dict[str, str]) -> list[str]:
    """(metrics' service dimension, logger's service) in a fresh interpreter with ``environment``."""
    code = (
        "from ucoauth.base.observability import logger, metrics\n"
        "metrics.add_metric(name='Probe', unit='Count', value=1)\n"
        "print(metrics.serialize_metric_set()['service'], logger.service)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "POWERTOOLS_SERVICE_NAME"}
    env.update(environment)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "layers" / "ucoauth"), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.split()


def test_metrics_and_logs_carry_the_stacks_service_name() -> None:
    # Given the service name the template sets per stack, the metrics (and their alarms) are that stack's
    assert _service_seen({"POWERTOOLS_SERVICE_NAME": "ucoauth-a"}) == ["ucoauth-a", "ucoauth-a"]
    # and without it (a test or a script), the package's own name
    assert _service_seen({}) == ["ultracart-oauth", "ultracart-oauth"]
