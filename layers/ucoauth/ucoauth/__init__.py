"""UltraCart OAuth for AWS Lambda: the shared package behind every function of the SAM app.

App code in the same account uses :func:`ucoauth.usecases.tokens.get_access_token`.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["CACHES", "CONFIGURATION_CACHES", "__version__", "reset"]
__version__ = "0.1.0"

# Every process-wide cache of the package, as (module, the callable that forgets it), in the
# order they are forgotten: the services first (they hold the rest), the settings last. This is
# the one list; a unit test fails when a module gains a cache that is missing here.
CACHES: tuple[tuple[str, str], ...] = (
    ("ucoauth.adapters.services", "forget_services"),  # the wired Services (and the pace it remembers)
    ("ucoauth.usecases.tokens", "clear_token_cache"),  # access tokens served by get_access_token
    ("ucoauth.usecases.uninstall", "reset_webhook_secret_cache"),  # webhook secret provider and verifier
    ("ucoauth.adapters.ultracart", "forget_clients"),  # UltraCart clients (sessions, client secret)
    ("ucoauth.adapters.aws", "reset_clients"),  # boto3 session and clients
    ("ucoauth.base.settings", "get_settings.cache_clear"),  # the parsed environment
)


# The caches built from the environment's values (the settings, and the services wired from
# them). The others are keyed by what they were built from (the UltraCart clients by their
# configuration, the webhook verifier by the secret, tokens by merchant) or read none of it.
CONFIGURATION_CACHES: frozenset[str] = frozenset({"ucoauth.adapters.services", "ucoauth.base.settings"})


def reset(*, configuration_only: bool = False) -> None:
    """Forget every process-wide cache, so the next use reads the environment anew.

    For tests, the local stack and benchmarks (a warm Lambda never needs it). Only modules
    already imported have anything to forget, so this imports nothing: ``import ucoauth``
    stays as cheap as a cold start needs. ``configuration_only`` forgets only what the
    environment's values built (:data:`CONFIGURATION_CACHES`): the local stack does that when
    it puts another function's environment in place, and keeps the clients.
    """
    for module_name, forget in CACHES:
        if configuration_only and module_name not in CONFIGURATION_CACHES:
            continue
        module = sys.modules.get(module_name)
        if module is None:
            continue
        target: Any = module
        for name in forget.split("."):
            target = getattr(target, name)
        target()
