"""What a cold start loads, per function: no forbidden module, and no more modules than its budget.

Each function runs in a fresh interpreter with its environment from the template (fake
resources, nothing reachable), imports its ``app.py`` the way Lambda does and builds the clients
its first request needs (``bench.cold_child``, the cold-start benchmark's own child), then
reports ``sys.modules``. Counts, not time: the same venv gives the same answer on any machine.

The budget counts modules beyond a baseline process that builds two botocore clients (the part
every function needs whatever it does); the headroom is a few percent. When a budget fails, look
at what the change imports at module level (``python -X importtime``) before raising it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache

import pytest

from bench.cold import fake_function_env
from bench.common import FUNCTIONS, ROOT, child_env

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
_RARE_FOR_AN_INSTALL = ("ucoauth.rotation", "ucoauth.superseded", "ucoauth.tokens")
_RARE_FOR_A_DEVICE = ("ucoauth.install", "ucoauth.rotation", "ucoauth.superseded", "ucoauth.tokens")
# The resolvers and event classes no function uses: the packages event_handler and data_classes
# are loaded lazily (ucoauth.powertools), so their __init__ does not import every module they hold.
# asyncio comes only with Powertools' batch processor (it imports it at module level for async
# processing): the HTTP functions and the planner load none.
UNUSED_POWERTOOLS = (
    "aws_lambda_powertools.event_handler.appsync",
    "aws_lambda_powertools.event_handler.bedrock_agent",
    "aws_lambda_powertools.event_handler.vpc_lattice",
    "aws_lambda_powertools.utilities.data_classes.kinesis_firehose_event",
    "aws_lambda_powertools.utilities.data_classes.code_pipeline_job_event",
)
_NO_ASYNCIO = ("asyncio",)
FORBIDDEN = {
    "RefreshPlannerFunction": ("asyncio", "aws_lambda_powertools.utilities.data_classes"),
    "OAuthBrowserFunction": ("ucoauth.pages", *_RARE_FOR_AN_INSTALL, *_NO_ASYNCIO),
    "TokenApiFunction": _NO_ASYNCIO,
    "UninstallWebhookFunction": _NO_ASYNCIO,
    "AdminApiFunction": _NO_ASYNCIO,
    "DeviceFlowFunction": ("ucoauth.pages", *_RARE_FOR_A_DEVICE, *_NO_ASYNCIO),
    "DeviceWorkerFunction": ("ucoauth.pages", *_RARE_FOR_A_DEVICE),
}

# Modules beyond the botocore baseline after import + first-request clients (measured + headroom).
BUDGET = {
    "OAuthBrowserFunction": 194,
    "TokenApiFunction": 91,
    "UninstallWebhookFunction": 97,
    "RefreshPlannerFunction": 65,
    "RefreshWorkerFunction": 220,
    "RevokeWorkerFunction": 221,
    "AdminApiFunction": 96,
    "DeviceFlowFunction": 191,
    "DeviceWorkerFunction": 217,
}

_BASELINE = (
    "import json, sys, botocore.session\n"
    "session = botocore.session.get_session()\n"
    "session.create_client('dynamodb'); session.create_client('kms')\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)
_FUNCTION = (
    "import json, sys\n"
    "from bench.cold_child import prepare\n"
    "prepare(sys.argv[1])\n"
    "for name in sys.argv[2:]: __import__(name)\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)


def _modules(code: str, logical_id: str, *args: str) -> set[str]:
    env = child_env(fake_function_env(logical_id))
    answer = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert answer.returncode == 0, answer.stderr[-2000:]
    # The benchmark's own child modules are not the function's.
    return {name for name in json.loads(answer.stdout.splitlines()[-1]) if name.split(".")[0] != "bench"}


@cache
def _baseline() -> frozenset[str]:
    return frozenset(_modules(_BASELINE, "TokenApiFunction"))


@cache
def _loaded(logical_id: str) -> frozenset[str]:
    return frozenset(_modules(_FUNCTION, logical_id, FUNCTIONS[logical_id]))


def _forbidden(logical_id: str) -> tuple[str, ...]:
    names = list(FORBIDDEN_EVERYWHERE) + list(UNUSED_POWERTOOLS) + list(FORBIDDEN.get(logical_id, ()))
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


def test_every_function_has_a_budget() -> None:
    assert set(BUDGET) == set(FUNCTIONS)


@pytest.mark.parametrize("logical_id", _per_function())
def test_a_cold_start_loads_no_forbidden_module(logical_id: str) -> None:
    found = _violations(logical_id, _loaded(logical_id))
    assert not found, f"{logical_id} loads {found} on a cold start"


@pytest.mark.parametrize("logical_id", _per_function())
def test_a_cold_start_stays_within_its_module_budget(logical_id: str) -> None:
    extra = _loaded(logical_id) - _baseline()
    assert len(extra) <= BUDGET[logical_id], (
        f"{logical_id} loads {len(extra)} modules beyond botocore's two clients "
        f"(budget {BUDGET[logical_id]}); packages: {sorted({name.split('.')[0] for name in extra})}"
    )


def _violations(logical_id: str, loaded: frozenset[str] | set[str]) -> list[str]:
    return sorted(
        name
        for name in _forbidden(logical_id)
        if name in loaded or any(module.startswith(name + ".") for module in loaded)
    )


@pytest.mark.xdist_group("cold-TokenApiFunction")
def test_the_check_sees_a_module_imported_at_cold_start() -> None:
    # The token API with an import of requests added to its cold start: caught, and counted.
    loaded = _modules(_FUNCTION, "TokenApiFunction", "token_api", "requests")
    assert _violations("TokenApiFunction", loaded) == ["charset_normalizer", "idna", "requests"]
    assert len(loaded - _baseline()) > len(_loaded("TokenApiFunction") - _baseline())
