"""template.yaml's resources in moto's in-process mock, created once per process and emptied per test.

Creating the stack (key, table, queues, secrets, rules, alarms) costs more than most unit tests
themselves, and no unit test changes a resource: they change data. So the resources are created
the first time, kept in moto's backends between tests, and each test starts with them empty:
no item in any table, no message in any queue (in flight and delayed ones included). Anything
that resets moto's backends (``mock_aws`` with its default reset, moto's server's
``/moto-api/reset``) only makes the next test create them again.

moto itself runs as released: every request is parsed and validated as moto does it. What is
kept from one test to the next is the tests' own state (the resources, the AWS sessions), never
an answer of moto's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.session
import moto
from moto.backends import get_backend
from moto.core.custom_responses_mock import reset_responses_mock
from moto.core.models import MockAWS, responses_mock

from devstack.pinned import require_version
from devstack.resources import LocalResources, create_resources

# The moto whose backends' state _empty clears and whose request routes the stack removes.
WRITTEN_FOR_MOTO = "5.2.5"
_created: LocalResources | None = None
_sessions: dict[str, Any] = {}


@contextmanager
def in_process_stack(region: str) -> Iterator[LocalResources]:
    """``mock_aws`` active for the block, with the template's resources, empty.

    Emptying the resources and removing moto's routes reach into moto's own state, so this runs
    only on the moto it was written for (else ``devstack.pinned.UnpinnedInternalsError``).
    """
    global _created
    require_version("moto", WRITTEN_FOR_MOTO, "tests.support.moto_stack")
    mock = moto.mock_aws()
    # reset=False keeps the backends (and so the resources) of the previous test.
    mock.start(reset=False)
    try:
        if _created is None or _created.region != region or not _empty(_created):
            _created = create_resources(boto3.Session(region_name=region))
        yield _created
    finally:
        mock.stop(remove_data=False)
        if MockAWS._nested_count == 0:
            # Each start adds its ~1300 routes for the requests library again, and only a reset
            # of the backends would clear them: 130 tests later a worker held 170,000 (100 MB,
            # and each start slower than the last). The mock is off, so it needs none of them.
            reset_responses_mock(responses_mock)


@contextmanager
def sessions_kept_per_process(region: str) -> Iterator[None]:
    """In the block, the package's clients come from one botocore session per process (as in a
    warm Lambda), and ``boto3.client(...)`` in the tests from one boto3 session per process.

    A new session reads botocore's data files (service models, endpoints) again the first time
    a client needs them: about 100 ms of CPU, more than most unit tests take. Without this each
    test makes two: ``ucoauth.reset()`` drops the package's session, and moto's mock gives every
    test a new default boto3 session. Clients are still built anew in every test, reading the
    environment then (region, endpoint); only the session and what it read stay. Both are set
    through their libraries' public names (``ucoauth.adapters.aws.set_session``, ``boto3.DEFAULT_SESSION``)
    and put back when the block ends.
    """
    from ucoauth.adapters import aws

    if "package" not in _sessions:
        _sessions["package"] = botocore.session.get_session()
    if region not in _sessions:
        _sessions[region] = boto3.Session(region_name=region)
    previous_default = boto3.DEFAULT_SESSION
    aws.set_session(_sessions["package"])
    boto3.DEFAULT_SESSION = _sessions[region]
    try:
        yield
    finally:
        boto3.DEFAULT_SESSION = previous_default
        aws.set_session(None)


def _empty(resources: LocalResources) -> bool:
    """Delete every item of the stack's tables and every message of its queues, in moto's own
    state (what DeleteItem and PurgeQueue do, without a hundred calls per test); False when the
    resources are gone (moto was reset since they were created)."""
    prefix = f"{resources.stack_name}-"
    dynamodb = get_backend("dynamodb")[resources.account_id][resources.region]
    sqs = get_backend("sqs")[resources.account_id][resources.region]
    tables = {name: table for name, table in dynamodb.tables.items() if name.startswith(prefix)}
    queues = {name: queue for name, queue in sqs.queues.items() if name.startswith(prefix)}
    if resources.table_name not in tables or "RefreshQueue" not in resources.refs:
        return False
    if resources.refresh_queue_url.rsplit("/", 1)[-1] not in queues:
        return False
    for table in tables.values():
        table.items.clear()
    for queue in queues.values():
        queue._messages = []  # in flight and delayed messages included, as PurgeQueue
        queue._pending_messages = set()
    return True
