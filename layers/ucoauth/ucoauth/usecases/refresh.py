"""Scheduled refresh: the planner's read of what is due, and the worker's refresh of one merchant."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Literal

from ucoauth.adapters.installations.model import ACTIVE, REAUTHORIZATION_REQUIRED
from ucoauth.adapters.shards import DueShards
from ucoauth.base.errors import (
    AppCredentialsRejectedError,
    DeadlineTooCloseError,
    EventRelayError,
    LeaseBusyError,
    LeaseHeldError,
    NotDueError,
    NotInstalledError,
    PaceExceededError,
    ReauthorizationRequiredError,
)
from ucoauth.base.observability import logger, metrics
from ucoauth.base.timing import call_needs
from ucoauth.core.outbox import relay
from ucoauth.core.rotation import Rotation, reconcile, recovery_from_json

if TYPE_CHECKING:
    from ucoauth.adapters.services import Services
    from ucoauth.base.timing import Deadline

RefreshResult = Literal[
    "refreshed",
    "recovered",
    "not_due",
    "busy",
    "not_installed",
    "inactive",
    "lost_race",
    "reauthorization",
    "kept_for_recovery",
    "app_refused",
]


def plan(services: Services, *, stats: dict[str, int] | None = None) -> list[str]:
    """Merchants due for a refresh now, at most what the pace and the budget allow before the
    planner's next run (the budget's application windows, where refreshes count in them); the
    rest stays in the sparse index, in due order, for the next run.

    Queueing more than the workers may send to UltraCart before the next run would only bounce
    messages between the queue and the pace. When more is due than this run may queue, the
    backlog is counted (metric ``RefreshBacklog``): the capacity alarm watches it.
    """
    settings = services.settings
    allowed = settings.refresh_pace_limit * max(
        1, settings.planner_interval_seconds // settings.refresh_pace_window_seconds
    )
    hourly, daily = services.budget.limits("background")
    hour_used, day_used = services.budget.used(services.now())
    # The dashboard draws this against the hourly limit.
    metrics.add_metric(name="UltraCartBudgetUsed", unit="Count", value=hour_used)
    if services.budget.counts_refreshes:
        allowed = min(allowed, hourly - hour_used, daily - day_used)
    # else each merchant's own windows decide, at the call (a merchant is due about once a lifetime)
    allowed = max(0, allowed)
    # Every shard that may still hold installations, the ones a lower DUE_SHARDS dropped included.
    shards = DueShards(settings.table_name, configured=settings.due_shards)
    mark = shards.to_read(stats)
    # One more than allowed tells whether anything is left behind.
    due = services.installation_reads.due_merchants(
        now=services.now(), limit=allowed + 1, stats=stats, shards=mark.shards
    )
    shards.retire_dropped(mark, now=services.now(), stats=stats)
    backlog = max(0, len(due) - allowed)
    if stats is not None:
        stats["backlog"] = backlog
    metrics.add_metric(name="RefreshBacklog", unit="Count", value=backlog)
    if backlog:
        logger.warning("more installations are due than the budget allows this run", backlog=backlog)
    return due[:allowed]


def refresh_due(services: Services, merchant_id: str, *, deadline: Deadline) -> RefreshResult:
    """Refresh a due installation (the worker's path). Transient failures raise.

    Raises RetryLaterError subclasses (nothing was sent: pace, budget, time, an unsettled
    grant), TransientUltraCartError, KeyUnavailableError and AWS errors, so the message comes
    back; everything else ends in a result. ``app_refused``: UltraCart refused the app itself,
    not this merchant's grant; nothing changed, the installation stays due, and the planner's
    next run queues it again (one message per due merchant per run, however long it lasts).
    """
    if services.clock() < services.pace_blocked_until:
        # The window's pace is known to be spent: no lease, no counter read, no call.
        raise PaceExceededError(services.pace_blocked_until - services.clock())
    if not deadline.allows(call_needs(services.settings)):
        raise DeadlineTooCloseError(deadline.remaining())
    now = services.now()
    try:
        lease = services.installations.lease(
            merchant_id, owner=f"worker:{uuid.uuid4()}", now=now, until=deadline.lease_until, due_before=now
        )
    except LeaseBusyError:
        return "busy"
    except NotInstalledError:
        return "not_installed"
    except NotDueError:
        return "not_due"
    with lease:
        installation = lease.installation
        active = installation.status == ACTIVE and installation.tokens_ciphertext is not None
        if installation.pending_event:
            if relay(services, installation):
                if not active:
                    lease.cleared()  # clearing an inactive item's events removes its lease too
            elif not active:
                raise EventRelayError(merchant_id)  # the message comes back; the events stay parked
        if not active:
            for record in installation.recoveries:
                reconcile(services, lease, deadline, record)
            return "inactive"
        wait = services.pace.try_take(services.clock())
        if wait > 0:
            services.pace_blocked_until = services.clock() + wait
            raise PaceExceededError(wait)
        try:
            return Rotation(services, lease, deadline).run().result
        except AppCredentialsRejectedError:
            return "app_refused"


def refresh_now(services: Services, merchant_id: str, *, deadline: Deadline) -> RefreshResult:
    """Refresh an active installation now, whatever its due time (an operator's request).

    Under the lease bound to ``deadline`` and within the UltraCart budget (the background share),
    like the worker; it does not take from the refresh pace. Raises NotInstalledError (unknown,
    uninstalling or uninstalled), ReauthorizationRequiredError (already waiting for a reinstall),
    LeaseBusyError (someone else is acting on the merchant), RetryLaterError subclasses (nothing
    was sent), TransientUltraCartError, KeyUnavailableError and AWS errors.
    """
    if not deadline.allows(call_needs(services.settings)):
        raise DeadlineTooCloseError(deadline.remaining())
    lease = services.installations.lease(
        merchant_id, owner=f"admin:{uuid.uuid4()}", now=services.now(), until=deadline.lease_until
    )
    with lease:
        installation = lease.installation
        if installation.status == REAUTHORIZATION_REQUIRED:
            raise ReauthorizationRequiredError(merchant_id)
        if installation.status != ACTIVE or installation.tokens_ciphertext is None:
            raise NotInstalledError(merchant_id)
        return Rotation(services, lease, deadline).run().result


def apply_recovery_message(services: Services, body: dict[str, Any], *, deadline: Deadline) -> str:
    """A recovery message (tokens a holder could not write to the item): reconcile it under the
    lease exactly as a recovery record on the item.

    A ``hold:`` lease does not stop it (the hold waits for this very message). A busy lease
    does not either: the record is kept on the item at once (a side slot, no lease needed), so
    the holder's next read finds it, and :class:`LeaseHeldError` re-queues the message for when
    that lease ends, spending none of its receives."""
    merchant_id = str(body.get("merchant_id"))
    record = recovery_from_json(body.get("recovery"))
    if record is None:
        logger.error("malformed recovery message dropped", merchant_id=merchant_id)
        return "invalid"
    if not deadline.allows(call_needs(services.settings)):
        raise DeadlineTooCloseError(deadline.remaining())
    try:
        lease = services.installations.lease(
            merchant_id,
            owner=f"recovery:{uuid.uuid4()}",
            now=services.now(),
            until=deadline.lease_until,
            through_hold=True,
        )
    except NotInstalledError:
        return "not_installed"
    except LeaseBusyError as busy:
        services.installations.keep_recovery(merchant_id, record, now=services.now())
        raise LeaseHeldError.of(busy, services.now()) from busy
    with lease:
        # On the item first: if this attempt cannot settle it, the item keeps it (and the due
        # index brings it back), not this message. (A newer record of its generation wins.)
        services.installations.keep_recovery(merchant_id, record, now=services.now())
        outcome = reconcile(services, lease, deadline, record)
    return outcome.result if outcome is not None else "reconciled"
