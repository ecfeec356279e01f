"""One error hierarchy, status codes only at the edge: the package raises its own typed errors,
by kind, and never decides an HTTP status."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

import ucoauth
from ucoauth.adapters import aws as uc_aws
from ucoauth.adapters.queues import send_refresh_requests
from ucoauth.base import errors
from ucoauth.base.errors import QueueSendError, UcOAuthError
from ucoauth.base.validation import BadInput

PACKAGE = Path(ucoauth.__file__).parent
BUILTIN_ERRORS = {"Exception", "RuntimeError", "ValueError", "TypeError", "KeyError", "OverflowError"}


def test_every_error_the_package_defines_is_under_one_base() -> None:
    defined = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, Exception)]
    assert len(defined) > 20
    assert all(issubclass(cls, UcOAuthError) for cls in defined)
    assert issubclass(BadInput, UcOAuthError)
    assert issubclass(BadInput, ValueError)  # still what it is


def test_no_error_of_the_package_carries_a_status_code() -> None:
    domain = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, UcOAuthError)]
    # UltraCartError's status is UltraCart's answer (an observation), not ours to return.
    ours = [cls for cls in domain if not issubclass(cls, errors.UltraCartError)]
    assert all("status" not in inspect.signature(cls.__init__).parameters for cls in ours)


def test_the_package_raises_no_builtin_exception() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                name = raised.id if isinstance(raised, ast.Name) else ""
                assert name not in BUILTIN_ERRORS, f"{path.name}:{node.lineno} raises {name}"


class RefusingSqs:
    """An SQS client that refuses every message of every batch."""

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {"Failed": [{"Id": entry["Id"], "SenderFault": False} for entry in Entries]}


def test_refresh_messages_that_sqs_keeps_refusing_raise_a_typed_error() -> None:
    # Given SQS refusing everything
    uc_aws.set_client("sqs", RefusingSqs())
    try:
        # When / Then
        with pytest.raises(QueueSendError, match="2 refresh messages could not be queued"):
            send_refresh_requests("https://sqs.example/queue", ["A1", "B2"])
    finally:
        ucoauth.reset()
