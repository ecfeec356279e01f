"""``--dist loadgroup`` keeps the tests of one ``xdist_group`` on one worker, under pytest 9.2 too.

A plugin (``tests/conftest.py`` imports its hook; ``-p tests.support.xdist_groups`` loads it alone).
"""

from __future__ import annotations

from importlib.metadata import version

import pytest
from _pytest.nodeid import NodeId

# The versions whose private ids this hook reads (xdist's ``item._nodeid``) and writes (pytest's
# ``item._id``, a ``_pytest.nodeid.NodeId``): on any other it refuses to run rather than guess.
# (Checked here, not with devstack.pinned: this plugin loads alone, without the project's paths.)
WRITTEN_FOR = {"pytest": "9.2.0", "pytest-xdist": "3.8.0"}


def _require_written_for_versions() -> None:
    for distribution, written_for in WRITTEN_FOR.items():
        installed = version(distribution)
        if installed != written_for:
            raise pytest.UsageError(
                f"tests/support/xdist_groups.py relies on the internals of {distribution} {written_for}, "
                f"but {distribution} {installed} is installed: check whether pytest-xdist#1386 is fixed "
                "(then delete the plugin), else read it again against the new versions"
            )


def pytest_configure(config: pytest.Config) -> None:
    """Refuse ``--dist loadgroup`` on other versions than the ones the fix below was written for."""
    if getattr(config.option, "dist", None) == "loadgroup":
        _require_written_for_versions()


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
