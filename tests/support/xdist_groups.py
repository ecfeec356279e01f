"""``--dist loadgroup`` keeps the tests of one ``xdist_group`` on one worker, under pytest 9.2 too.

A plugin (``tests/conftest.py`` imports its hook; ``-p tests.support.xdist_groups`` loads it alone).
"""

from __future__ import annotations

import pytest
from _pytest.nodeid import NodeId


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--dist loadgroup`` keeps the tests of one ``xdist_group`` on one worker.

    pytest-xdist 3.8 tells its scheduler a test's group by appending ``@group`` to the test's id
    on the worker (``item._nodeid``), which pytest 9.2 no longer reads (its ids are structured):
    every group was silently spread over the workers (pytest-dev/pytest-xdist#1386). This puts
    that id where pytest 9.2 reads it; without xdist, or once xdist writes it there, nothing changes.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        grouped = vars(item).get("_nodeid")
        if isinstance(grouped, str) and grouped != item.nodeid:
            item._id = NodeId.parse(grouped)
