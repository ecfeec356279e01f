"""Powertools' resolver and event-class packages, loaded lazily (ucoauth.edges.powertools): a function
gets what it imports and nothing else, and every name the packages export still works."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from bench.common import ROOT, child_env
from ucoauth.edges.powertools import DATA_CLASSES, EVENT_HANDLER, package_exports, register_lazy_package

# Run in a fresh interpreter: in this one, other tests may have imported the packages for real.
_PROBE = textwrap.dedent(
    """
    import json, sys
    from ucoauth.edges.resolver import APIGatewayHttpResolver, Response
    prefixes = ("aws_lambda_powertools.event_handler.", "aws_lambda_powertools.utilities.data_classes.")
    report = {"after_resolver": sorted(m for m in sys.modules if m.startswith(prefixes))}
    report["asyncio_after_resolver"] = "asyncio" in sys.modules
    # Names the package roots export, imported the usual way, after the lazy registration.
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver, content_types
    from aws_lambda_powertools.event_handler.api_gateway import APIGatewayRestResolver as direct
    from aws_lambda_powertools.utilities.data_classes import SQSEvent, S3Event, event_source
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSEvent as sqs_direct
    report["same_objects"] = APIGatewayRestResolver is direct and SQSEvent is sqs_direct
    report["content_types"] = content_types.APPLICATION_JSON
    report["event_source"] = callable(event_source)
    try:
        from aws_lambda_powertools.event_handler import NoSuchResolver
    except ImportError as error:
        report["unknown"] = type(error).__name__
    app = APIGatewayHttpResolver()

    @app.get("/ping")
    def ping():
        return Response(status_code=200, content_type="text/plain", body="pong")

    event = {"version": "2.0", "routeKey": "$default", "rawPath": "/ping", "rawQueryString": "",
             "headers": {}, "requestContext": {"http": {"method": "GET", "path": "/ping"},
             "stage": "$default"}, "isBase64Encoded": False}
    answer = app.resolve(event, None)
    report["routed"] = [answer["statusCode"], answer["body"]]
    print(json.dumps(report))
    """
)


@cache
def _probe() -> dict[str, Any]:
    answer = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    result: dict[str, Any] = json.loads(answer.stdout.splitlines()[-1])
    return result


def test_the_resolver_loads_only_its_own_modules() -> None:
    loaded = _probe()["after_resolver"]
    assert "aws_lambda_powertools.event_handler.api_gateway" in loaded
    assert "aws_lambda_powertools.utilities.data_classes.api_gateway_proxy_event" in loaded
    for unused in ("appsync", "bedrock_agent", "vpc_lattice", "lambda_function_url", "http_resolver"):
        assert f"aws_lambda_powertools.event_handler.{unused}" not in loaded
    for unused in ("kinesis_firehose_event", "s3_batch_operation_event", "code_pipeline_job_event"):
        assert f"aws_lambda_powertools.utilities.data_classes.{unused}" not in loaded
    assert _probe()["asyncio_after_resolver"] is False


def test_every_exported_name_still_imports_from_the_package_root() -> None:
    report = _probe()
    assert report["same_objects"] is True
    assert report["content_types"] == "application/json"
    assert report["event_source"] is True
    assert report["unknown"] == "ImportError"


def test_the_lazily_loaded_resolver_routes_a_request() -> None:
    assert _probe()["routed"] == [200, "pong"]


@pytest.mark.parametrize("package", [EVENT_HANDLER, DATA_CLASSES])
def test_the_exports_read_from_the_source_are_the_packages_all(package: str) -> None:
    # What the lazy package resolves without running __init__ covers everything it declares: the
    # real __init__, run here in a module of its own, exports the same objects.
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.loader is not None and spec.origin is not None
    real = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real)
    exports = package_exports(spec.origin, package)
    assert set(real.__all__) <= set(exports)
    for name in real.__all__:
        assert getattr(importlib.import_module(exports[name]), name) is getattr(real, name)


def test_a_name_the_init_defines_itself_runs_the_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "lazyfake"
    package.mkdir()
    (package / "__init__.py").write_text("from .part import PART\nRUNS = []\nRUNS.append(1)\n")
    (package / "part.py").write_text("PART = 'part'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazyfake", raising=False)
    monkeypatch.delitem(sys.modules, "lazyfake.part", raising=False)
    register_lazy_package("lazyfake")
    fake = sys.modules["lazyfake"]
    assert "RUNS" not in vars(fake)
    from lazyfake import PART  # type: ignore[import-not-found]

    assert PART == "part"
    assert "RUNS" not in vars(fake)  # a re-export: read from the submodule, __init__ not run
    from lazyfake import RUNS

    assert RUNS == [1]  # defined by __init__ itself: it ran, once
    assert fake.PART == "part"
