"""Races over real HTTP (moto's server + the sandbox with strict rotation).

Sizes come from ``RACE_WORKERS`` (CI: a reduced size; ``make reliability``: 50).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.deadlines import a_deadline
from tests.support.installs import seed_installation, stored_tokens
from tests.support.processes import results_of, start_processes
from ucoauth.adapters.installations.model import ACTIVE
from ucoauth.adapters.services import Services
from ucoauth.usecases.install import begin_install, complete_install
from ucoauth.usecases.refresh import refresh_due
from ucoauth.usecases.uninstall import process_uninstall
from ucsandbox import Sandbox

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("processes")]
WORKERS = int(os.environ.get("RACE_WORKERS", "16"))
REDIRECT = "http://localhost:3000/oauth/callback"


def test_many_concurrent_refreshes_make_one_ultracart_call(
    live: Services, live_env: dict[str, str], sandbox: Sandbox
) -> None:
    sandbox.configure(rotate=True, latency_ms=300)
    seed_installation(live, sandbox, "MANY1")
    processes_count = WORKERS // 2
    start_at = time.time() + 2.0 + 0.25 * processes_count
    processes = start_processes(live_env, "MANY1", processes_count, start_at)
    results: list[str] = []

    def worker() -> None:
        time.sleep(max(0.0, start_at - time.time()))
        results.append(refresh_due(live, "MANY1", deadline=a_deadline(live)))

    threads = [threading.Thread(target=worker) for _ in range(WORKERS - processes_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    results += results_of(processes)
    assert len(results) == WORKERS
    assert results.count("refreshed") == 1, results
    assert len(sandbox.requests("token")) == 1
    assert sandbox.refresh_token_is_valid(stored_tokens(live, "MANY1").refresh_token or "")


def _begin(live: Services) -> tuple[str, str]:
    start = begin_install(live, redirect_uri=REDIRECT)
    return parse_qs(urlsplit(start.authorize_url).query)["state"][0], start.browser_nonce


def test_two_installs_of_one_merchant_at_once_leave_one_consistent_installation(
    live: Services, sandbox: Sandbox
) -> None:
    # Let both code exchanges through at once (UltraCart would 429 one of them) so the two
    # writes really race in DynamoDB.
    sandbox.configure(latency_ms=100, concurrency_scope=None)
    flows = [(*_begin(live), sandbox.issue_code("TWICE1", REDIRECT)) for _ in range(2)]
    barrier = threading.Barrier(2)

    errors: list[str] = []

    def complete(state: str, nonce: str, code: str) -> None:
        barrier.wait(timeout=10)
        try:
            complete_install(
                live,
                code=code,
                state=state,
                browser_nonce=nonce,
                redirect_uri=REDIRECT,
                deadline=a_deadline(live),
            )
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=complete, args=flow) for flow in flows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    installation = live.installations.get("TWICE1")
    assert installation is not None
    assert installation.status == ACTIVE
    # DynamoDB applies the two UpdateItems one after the other (as moto's server does under the
    # lock of devstack.motolock): each counts a generation, the later one replaces the earlier's
    # tokens, and one active installation holds one coherent token pair.
    assert installation.generation == 2
    assert installation.lease_owner is None
    tokens = stored_tokens(live, "TWICE1")  # decrypts: one coherent pair, not a mix of writes
    assert sandbox.token_is_valid(tokens.access_token)
    assert sandbox.refresh_token_is_valid(tokens.refresh_token or "")


def test_an_install_racing_a_late_uninstall_stays_installed(live: Services, sandbox: Sandbox) -> None:
    seed_installation(live, sandbox, "LATE1", expires_in=3600)
    sent_at = time.time() - 2  # the merchant uninstalled (old generation) just before reinstalling
    time.sleep(1.1)
    state, nonce = _begin(live)
    code = sandbox.issue_code("LATE1", REDIRECT)
    outcomes: list[str] = []

    def install() -> None:
        complete_install(
            live,
            code=code,
            state=state,
            browser_nonce=nonce,
            redirect_uri=REDIRECT,
            deadline=a_deadline(live),
        )

    def late_uninstall() -> None:
        message = {
            "id": "late",
            "source": "webhook",
            "detail-type": "App Uninstalled",
            "time": datetime.fromtimestamp(sent_at, tz=UTC).isoformat(),
            # Stamped seconds before the reinstall began: within the clock-skew allowance, only
            # the installation it names tells it apart from an uninstall of the reinstall.
            "detail": {"merchant_id": "LATE1", "installation_id": "LATE1:1"},
        }
        for _ in range(1, 20):
            try:
                outcomes.append(process_uninstall(live, message, deadline=a_deadline(live)))
                return
            except Exception:
                time.sleep(0.1)

    threads = [threading.Thread(target=install), threading.Thread(target=late_uninstall)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    installation = live.installations.get("LATE1")
    assert installation is not None
    # Either order: if the uninstall ran first it removed the old generation; the reinstall wins.
    assert installation.status == ACTIVE, outcomes
    assert installation.tokens_ciphertext is not None
    assert sandbox.token_is_valid(stored_tokens(live, "LATE1").access_token)
