"""Code that reaches into another package's internals applies only to the version it was written for.

A private name (a handler's method, a queue's message list) can change in any release without
notice. Each such piece of the local stack, the tests and the benchmarks names the version of the
package it was read against and calls :func:`require_version` before it touches anything: on
another version it raises, so an upgrade stops at the code to read again, instead of running
against internals that moved and answering something else than AWS would.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import version


class UnpinnedInternalsError(RuntimeError):
    """The installed package is not the version whose internals the code was written for."""


@cache
def installed_version(distribution: str) -> str:
    """The installed version of ``distribution`` (read once per process)."""
    return version(distribution)


def require_version(distribution: str, written_for: str, what: str) -> None:
    """Raise :class:`UnpinnedInternalsError` unless ``distribution`` is installed at ``written_for``.

    ``what`` names the code that relies on the internals, for the message.
    """
    installed = installed_version(distribution)
    if installed != written_for:
        raise UnpinnedInternalsError(
            f"{what} relies on the internals of {distribution} {written_for}, but {distribution} "
            f"{installed} is installed: read it again against {installed}'s code, then set the "
            "version it was written for"
        )
