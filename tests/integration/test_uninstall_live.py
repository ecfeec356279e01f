"""Uninstall over real HTTP: revoke at the sandbox, crypto-shred in moto's server."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from tests.integration.conftest import seed_installation
from ucoauth.services import Services
from ucoauth.store import UNINSTALLED
from ucoauth.tokens import Refresher
from ucoauth.uninstall import REVOKE_ATTEMPTS, process_uninstall
from ucsandbox import Sandbox

pytestmark = pytest.mark.integration


def message(merchant_id: str, *, at: float | None = None) -> dict[str, object]:
    when = datetime.fromtimestamp(at if at is not None else time.time() + 1, tz=UTC).isoformat()
    return {
        "id": "t",
        "source": "webhook",
        "detail-type": "App Uninstalled",
        "time": when,
        "detail": {"merchant_id": merchant_id},
    }


def test_revoked_tokens_are_refused_by_ultracart_afterwards(live: Services, sandbox: Sandbox) -> None:
    access, refresh = seed_installation(live, sandbox, "UN1", expires_in=3600)
    assert process_uninstall(live, message("UN1")) == "removed"
    revokes = sandbox.requests("revoke")
    assert sorted(r.form["token"] for r in revokes) == sorted([access, refresh])
    assert all(r.form["client_id"] == sandbox.client_id for r in revokes)
    assert not sandbox.token_is_valid(access)
    assert not sandbox.refresh_token_is_valid(refresh)
    installation = live.installations.get("UN1")
    assert installation is not None
    assert installation.status == UNINSTALLED
    assert installation.tokens_ciphertext is None


@pytest.mark.parametrize("fault", [{"status": 500}, {"timeout": 3.0}])
def test_revoke_failures_retry_then_shred(live: Services, sandbox: Sandbox, fault: dict[str, object]) -> None:
    seed_installation(live, sandbox, "UN2", expires_in=3600)
    sandbox.add_fault("revoke", times=-1, **fault)  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - the queue retries whatever it is
        process_uninstall(live, message("UN2"), receive_count=1)
    still = live.installations.get("UN2")
    assert still is not None
    assert still.status == "active"
    assert still.lease_owner is None
    assert process_uninstall(live, message("UN2"), receive_count=REVOKE_ATTEMPTS) == "removed"
    gone = live.installations.get("UN2")
    assert gone is not None
    assert gone.tokens_ciphertext is None  # crypto-shredded even though UltraCart never confirmed
    assert gone.uninstall_reason == "webhook;revoke_failed_transient"


def test_refresh_racing_an_uninstall_ends_uninstalled_and_revoked(live: Services, sandbox: Sandbox) -> None:
    sandbox.configure(latency_ms=300)
    _, seeded_refresh = seed_installation(live, sandbox, "UN3", expires_in=60)
    outcomes: dict[str, object] = {}

    def refresh() -> None:
        try:
            outcomes["refresh"] = Refresher(live).refresh_due("UN3")
        except Exception as exc:
            outcomes["refresh"] = type(exc).__name__

    def uninstall() -> None:
        for attempt in range(1, 20):
            try:
                outcomes["uninstall"] = process_uninstall(live, message("UN3"), receive_count=attempt)
                return
            except Exception:
                time.sleep(0.2)  # the lease is busy: the queue would bring the message back

    threads = [threading.Thread(target=refresh), threading.Thread(target=uninstall)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes.get("uninstall") == "removed", outcomes
    installation = live.installations.get("UN3")
    assert installation is not None
    assert installation.status == UNINSTALLED
    assert installation.tokens_ciphertext is None
    revoked = [r.form["token"] for r in sandbox.requests("revoke")]
    assert len(revoked) == 2  # the tokens stored when the uninstall held the lease
    assert not sandbox.refresh_token_is_valid(seeded_refresh)
    if outcomes["refresh"] == "refreshed":
        # The refresh finished first: the uninstall revoked the new tokens, not the dead ones.
        assert seeded_refresh not in revoked
    for token in revoked:
        assert not sandbox.token_is_valid(token)
        assert not sandbox.refresh_token_is_valid(token)


def test_an_uninstall_older_than_the_install_is_ignored(live: Services, sandbox: Sandbox) -> None:
    seed_installation(live, sandbox, "UN4", expires_in=3600)
    assert process_uninstall(live, message("UN4", at=time.time() - 3600)) == "late"
    assert live.installations.get("UN4").status == "active"  # type: ignore[union-attr]
    assert sandbox.requests("revoke") == []
