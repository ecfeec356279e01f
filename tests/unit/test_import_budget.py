"""What a cold start loads, per function: no forbidden module.

Each function runs in a fresh interpreter with its environment from the template (fake
resources, nothing reachable), imports its ``app.py`` the way Lambda does and builds the clients
its first request needs (``bench.cold_child``, the cold-start benchmark's own child), then
reports ``sys.modules`` (:mod:`bench.modules`). How many modules each loads is a figure the
bench reports (``python -m bench.modules``), not a test: a split of one module into two is a
better house, not a failure; the packages a function must never load are.
"""

from __future__ import annotations

import pytest

from bench.common import FUNCTIONS
from bench.modules import cold_start_modules

# Loaded by no function: what boto3 adds to botocore (the functions build botocore clients), the
# parameters package (boto3 and every provider), pydantic, the X-Ray SDK, multiprocessing.
FORBIDDEN_EVERYWHERE = (
    "boto3",
    "s3transfer",
    "pydantic",
    "aws_xray_sdk",
    "multiprocessing",
    "aws_lambda_powertools.utilities.parameters",
)
# Only the functions whose first request calls UltraCart load requests (and what it brings).
ULTRACART_ONLY = ("requests", "charset_normalizer", "idna")
CALLS_ULTRACART = {
    "OAuthBrowserFunction",
    "RefreshWorkerFunction",
    "RevokeWorkerFunction",
    "DeviceFlowFunction",
    "DeviceWorkerFunction",
}
HTTP_ONLY = ("aws_lambda_powertools.event_handler",)
HTTP_FUNCTIONS = {
    "OAuthBrowserFunction",
    "TokenApiFunction",
    "UninstallWebhookFunction",
    "AdminApiFunction",
    "DeviceFlowFunction",
}
BATCH_ONLY = ("aws_lambda_powertools.utilities.batch",)
BATCH_FUNCTIONS = {"RefreshWorkerFunction", "RevokeWorkerFunction", "DeviceWorkerFunction"}
# What a path needs only when it is taken is imported there: the install's failure and reinstall
# paths (rotation, the revoke queue), the pages (a completed callback redirects), token access
# (an install only stores tokens), the device approval (the install path).
_RARE_FOR_AN_INSTALL = ("ucoauth.core.rotation", "ucoauth.usecases.superseded", "ucoauth.usecases.tokens")
_RARE_FOR_A_DEVICE = (
    "ucoauth.usecases.install",
    "ucoauth.core.rotation",
    "ucoauth.usecases.superseded",
    "ucoauth.usecases.tokens",
)
# asyncio comes with Powertools' resolver and batch processor (the package root of
# event_handler imports every resolver, AppSync's among them, and the batch module imports it for
# async processing): only the planner, which uses neither, must load none of it.
FORBIDDEN = {
    "RefreshPlannerFunction": ("asyncio", "aws_lambda_powertools.utilities.data_classes"),
    "OAuthBrowserFunction": ("ucoauth.edges.pages", *_RARE_FOR_AN_INSTALL),
    "DeviceFlowFunction": ("ucoauth.edges.pages", *_RARE_FOR_A_DEVICE),
    "DeviceWorkerFunction": ("ucoauth.edges.pages", *_RARE_FOR_A_DEVICE),
}


def _loaded(logical_id: str) -> frozenset[str]:
    return cold_start_modules(logical_id)


def _forbidden(logical_id: str) -> tuple[str, ...]:
    names = list(FORBIDDEN_EVERYWHERE) + list(FORBIDDEN.get(logical_id, ()))
    if logical_id not in CALLS_ULTRACART:
        names += ULTRACART_ONLY
    if logical_id not in HTTP_FUNCTIONS:
        names += HTTP_ONLY
    if logical_id not in BATCH_FUNCTIONS:
        names += BATCH_ONLY
    return tuple(names)


def _per_function() -> list[object]:
    # Both checks of a function read one cold start (``_loaded`` caches it per process): under
    # xdist they run on one worker, so each function's cold start is measured once, not twice.
    return [pytest.param(name, marks=pytest.mark.xdist_group(f"cold-{name}")) for name in sorted(FUNCTIONS)]


@pytest.mark.parametrize("logical_id", _per_function())
def test_a_cold_start_loads_no_forbidden_module(logical_id: str) -> None:
    found = _violations(logical_id, _loaded(logical_id))
    assert not found, f"{logical_id} loads {found} on a cold start"


def _violations(logical_id: str, loaded: frozenset[str] | set[str]) -> list[str]:
    return sorted(
        name
        for name in _forbidden(logical_id)
        if name in loaded or any(module.startswith(name + ".") for module in loaded)
    )


@pytest.mark.xdist_group("cold-TokenApiFunction")
def test_the_check_sees_a_module_imported_at_cold_start() -> None:
    # The token API with an import of requests added to its cold start: caught.
    loaded = cold_start_modules("TokenApiFunction", "requests")
    assert _violations("TokenApiFunction", loaded) == ["charset_normalizer", "idna", "requests"]
