"""Uninstall over real HTTP: revoke at the sandbox, crypto-shred in moto's server."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from tests.support.deadlines import a_deadline
from tests.support.installs import seed_installation
from ucoauth.adapters.installations.model import UNINSTALLED
from ucoauth.adapters.services import Services
from ucoauth.base.errors import RevokePendingError
from ucoauth.usecases.refresh import refresh_due
from ucoauth.usecases.uninstall import process_uninstall
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
    assert process_uninstall(live, message("UN1"), deadline=a_deadline(live)) == "removed"
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
def test_revoke_failures_keep_the_grant_for_the_retries_then_revoke(
    live: Services, sandbox: Sandbox, fault: dict[str, object]
) -> None:
    access, refresh = seed_installation(live, sandbox, "UN2", expires_in=3600)
    sandbox.add_fault("revoke", times=-1, **fault)  # type: ignore[arg-type]
    with pytest.raises(RevokePendingError) as pending:
        process_uninstall(live, message("UN2"), deadline=a_deadline(live))
    still = live.installations.get("UN2")
    assert still is not None and still.status == "uninstalling" and still.lease_owner is None
    assert still.tokens_ciphertext is not None  # kept only to revoke them
    sandbox.clear_faults()
    deadline = time.monotonic() + 10
    while sandbox.in_flight._busy and time.monotonic() < deadline:
        time.sleep(0.05)  # UltraCart still works on the call the client gave up on (429 until then)
    retried = {**message("UN2"), "retry_since": pending.value.retry_since}
    assert process_uninstall(live, retried, deadline=a_deadline(live)) == "removed"
    gone = live.installations.get("UN2")
    assert gone is not None and gone.tokens_ciphertext is None and gone.revoke_confirmed is True
    assert not sandbox.token_is_valid(access) and not sandbox.refresh_token_is_valid(refresh)


def test_refresh_racing_an_uninstall_ends_uninstalled_and_revoked(live: Services, sandbox: Sandbox) -> None:
    sandbox.configure(latency_ms=300)
    _, seeded_refresh = seed_installation(live, sandbox, "UN3", expires_in=60)
    outcomes: dict[str, object] = {}

    def refresh() -> None:
        try:
            outcomes["refresh"] = refresh_due(live, "UN3", deadline=a_deadline(live))
        except Exception as exc:
            outcomes["refresh"] = type(exc).__name__

    def uninstall() -> None:
        for _ in range(1, 20):
            try:
                outcomes["uninstall"] = process_uninstall(live, message("UN3"), deadline=a_deadline(live))
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
    assert process_uninstall(live, message("UN4", at=time.time() - 3600), deadline=a_deadline(live)) == "late"
    assert live.installations.get("UN4").status == "active"  # type: ignore[union-attr]
    assert sandbox.requests("revoke") == []
