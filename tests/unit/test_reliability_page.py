"""docs/RELIABILITY.md's generator knows every operation the fault matrix reports cells for."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.reliability import OPERATIONS, Suite, render

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ROOT / "tests" / "integration" / "test_fault_matrix.py"


def matrix_operations() -> set[str]:
    """The operations the matrix's tests fill cells of (``@cells("<operation>", ...)``)."""
    return set(re.findall(r'^@cells\("(\w+)", ', MATRIX.read_text(), re.M))


def test_every_operation_of_the_matrix_has_a_column() -> None:
    found = matrix_operations()
    assert {"callback", "refresh", "token", "revoke", "webhook", "device"} <= found
    assert found <= set(OPERATIONS)


def row(operation: str, fault: str, end_state: str) -> dict[str, Any]:
    return {
        "operation": operation,
        "fault": fault,
        "injected": "UltraCart refuses the app's own client",
        "rank": 0,
        "outcome": "acked",
        "expected": "acked",
        "recovery": "polled again",
        "completed": True,
        "recovered": True,
        "lost": 0,
        "end_state": end_state,
        "lost_detail": {},
        "crash_lost": 0,
        "orphaned_grants": 0,
        "problems": {},
        "merchants": 1,
        "seconds": 1.0,
    }


def test_the_app_credential_cells_appear_in_the_overview_and_their_sections() -> None:
    rows = [
        row(operation, "uc_app_refused", "active, its grant live")
        for operation in ("callback", "refresh", "token", "device")
    ] + [row("revoke", "uc_app_refused", "uninstalled, revoke confirmed, no grant live")]
    suites = {"faults": Suite("faults", "Fault matrix", ["tests/integration/test_fault_matrix.py"], {})}
    sizes = {"merchants": 1, "fuzz": 1, "races": 1}
    page = render(suites, rows, [], [], sizes, datetime.now(UTC), 1.0, [])
    overview = next(line for line in page.splitlines() if line.startswith("| `uc_app_refused` |"))
    cells = [c.strip() for c in overview.strip("|").split("|")]
    # callback, refresh, token, revoke, webhook (no such cell), device
    expected = ["active", "active", "active", "uninstalled, revoked", "n/a", "active"]
    assert cells == ["`uc_app_refused`", *expected]
    assert "### device" in page
