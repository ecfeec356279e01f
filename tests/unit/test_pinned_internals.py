"""Code that reaches into another package's internals runs only on the version it was written for,
the one constraints.txt pins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from moto.core.models import MockAWS
from moto.dynamodb.responses import DynamoHandler
from moto.sqs.models import Queue

from bench import common as bench_common
from devstack import motolock, pinned
from devstack.pinned import UnpinnedInternalsError, require_version
from tests.support import moto_stack, xdist_groups

ROOT = Path(__file__).resolve().parents[2]


def _pinned(distribution: str) -> str:
    found = re.search(rf"^{re.escape(distribution)}==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert found is not None, f"constraints.txt pins no {distribution}"
    return found.group(1)


def test_every_piece_relying_on_motos_internals_was_written_for_the_pinned_moto() -> None:
    # When constraints.txt moves moto, this names what to read again against the new version.
    written_for = {
        "devstack.motolock": motolock.WRITTEN_FOR_MOTO,
        "tests.support.moto_stack": moto_stack.WRITTEN_FOR_MOTO,
        "bench.common.patch_moto_sqs_scans": bench_common.MOTO_SQS_SCANS_WRITTEN_FOR,
    }
    assert written_for == dict.fromkeys(written_for, _pinned("moto"))


def test_the_loadgroup_fix_was_written_for_the_pinned_pytest_and_xdist() -> None:
    written_for = xdist_groups.WRITTEN_FOR
    assert written_for == {name: _pinned(name) for name in written_for}


def test_another_version_is_refused_with_both_versions_and_the_code_named() -> None:
    installed = pinned.installed_version("moto")
    with pytest.raises(UnpinnedInternalsError) as refused:
        require_version("moto", "0.0.1", "the lock")
    assert str(refused.value).startswith(
        f"the lock relies on the internals of moto 0.0.1, but moto {installed} "
    )
    require_version("moto", installed, "the lock")  # the version it was written for: no error


@pytest.fixture
def another_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto as if another version were installed."""
    monkeypatch.setattr(pinned, "installed_version", lambda distribution: "99.0.0")


def test_the_dynamodb_lock_refuses_another_moto_and_wraps_nothing(another_moto: None) -> None:
    handler = DynamoHandler.call_action
    with pytest.raises(UnpinnedInternalsError) as refused:
        motolock.serialize_dynamodb()
    written_for = motolock.WRITTEN_FOR_MOTO
    assert str(refused.value).startswith(
        f"devstack.motolock relies on the internals of moto {written_for}, but moto 99.0.0 is installed"
    )
    assert DynamoHandler.call_action is handler


def test_the_in_process_stack_refuses_another_moto_before_starting_it(another_moto: None) -> None:
    active = MockAWS._nested_count
    with pytest.raises(UnpinnedInternalsError) as refused, moto_stack.in_process_stack("us-east-1"):
        pass  # pragma: no cover - never entered
    assert str(refused.value).startswith("tests.support.moto_stack relies on the internals of moto")
    assert MockAWS._nested_count == active


def test_the_benchmarks_sqs_patch_refuses_another_moto_and_patches_nothing(another_moto: None) -> None:
    messages = Queue.__dict__["messages"]
    with pytest.raises(UnpinnedInternalsError) as refused:
        bench_common.patch_moto_sqs_scans()
    assert str(refused.value).startswith("bench.common.patch_moto_sqs_scans relies on the internals of moto")
    assert Queue.__dict__["messages"] is messages
