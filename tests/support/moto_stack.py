"""template.yaml's resources in moto's in-process mock, created once per process and emptied per test.

Creating the stack (key, table, queues, secrets, rules, alarms) costs more than most unit tests
themselves, and no unit test changes a resource: they change data. So the resources are created
the first time, kept in moto's backends between tests, and each test starts with them empty:
no item in any table, no message in any queue (in flight and delayed ones included). Anything
that resets moto's backends (``mock_aws`` with its default reset, moto's server's
``/moto-api/reset``) only makes the next test create them again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.session
import moto
from moto.backends import get_backend

from devstack.resources import LocalResources, create_resources

_created: LocalResources | None = None


@contextmanager
def shared_botocore_data() -> Iterator[None]:
    """Every botocore session of the block shares one loader of botocore's data files.

    Each new session (and the package makes one after every ``ucoauth.reset()``) would parse
    the service models and endpoint files again, which costs more than most tests. The files
    never change, and one session's clients share them the same way.
    """
    original = botocore.session.create_loader
    loaders: dict[str | None, Any] = {}

    def create_loader(search_path_string: str | None = None) -> Any:
        if search_path_string not in loaders:
            loaders[search_path_string] = original(search_path_string)
        return loaders[search_path_string]

    botocore.session.create_loader = create_loader
    try:
        yield
    finally:
        botocore.session.create_loader = original


@contextmanager
def in_process_stack(region: str) -> Iterator[LocalResources]:
    """``mock_aws`` active for the block, with the template's resources, empty."""
    global _created
    mock = moto.mock_aws()
    # reset=False keeps the backends (and so the resources) of the previous test.
    mock.start(reset=False)
    try:
        if _created is None or _created.region != region or not _empty(_created):
            _created = create_resources(boto3.Session(region_name=region))
        yield _created
    finally:
        mock.stop(remove_data=False)


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
