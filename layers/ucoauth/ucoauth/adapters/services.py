"""The wiring: one object holding every collaborator a use case needs, built once per process.

Handlers ask for :func:`get_services`; tests build :class:`Services` with their own parts.
Heavy pieces (the UltraCart client and its ``requests`` session) are created on first use, so a
function that never calls UltraCart never imports ``requests``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ucoauth.adapters.browser_items import InstallSessionStore, ReceiptStore, StateStore, WebhookIdStore
from ucoauth.adapters.budget import BudgetedUltraCart, Tier, UltraCartBudget
from ucoauth.adapters.crypto import DataKeyCache, TokenCipher
from ucoauth.adapters.events import EventPublisher
from ucoauth.adapters.installations.reads import InstallationReads
from ucoauth.adapters.installations.store import InstallationStore
from ucoauth.adapters.pace import PaceCounter
from ucoauth.base.settings import Settings, get_settings

if TYPE_CHECKING:
    from ucoauth.adapters.ultracart import UltraCartApi
    from ucoauth.base.timing import Deadline


@dataclass(eq=False, repr=False)
class Services:
    """Collaborators of the use cases. ``clock`` and ``sleep`` are injectable for tests."""

    settings: Settings
    installations: InstallationStore
    states: StateStore
    webhook_ids: WebhookIdStore
    cipher: TokenCipher
    receipts: ReceiptStore
    ultracart_factory: Callable[[], UltraCartApi] | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    # Until when (epoch seconds) this process knows the global refresh pace is spent.
    pace_blocked_until: float = 0.0
    # Built on first use from their settings section, so a function without that section (the
    # webhook has no UltraCart, no events, no pace) never needs its variables. Injectable.
    _pace: PaceCounter | None = None
    _budget: UltraCartBudget | None = None
    _events: EventPublisher | None = None
    _installation_reads: InstallationReads | None = None
    _install_sessions: InstallSessionStore | None = None

    @property
    def install_sessions(self) -> InstallSessionStore:
        """Install sessions (the links the app's backend creates), on the table."""
        if self._install_sessions is None:
            self._install_sessions = InstallSessionStore(self.settings.table_name)
        return self._install_sessions

    @install_sessions.setter
    def install_sessions(self, value: InstallSessionStore) -> None:
        self._install_sessions = value

    @property
    def installation_reads(self) -> InstallationReads:
        """Index reads over many installations (the planner's due items, the admin API's pages)."""
        if self._installation_reads is None:
            self._installation_reads = InstallationReads(
                self.settings.table_name, shards=self.settings.due_shards
            )
        return self._installation_reads

    @installation_reads.setter
    def installation_reads(self, value: InstallationReads) -> None:
        self._installation_reads = value

    @property
    def pace(self) -> PaceCounter:
        """The global refresh pace (``refresh`` settings)."""
        if self._pace is None:
            self._pace = PaceCounter(
                self.settings.table_name,
                limit=self.settings.refresh_pace_limit,
                window_seconds=self.settings.refresh_pace_window_seconds,
            )
        return self._pace

    @pace.setter
    def pace(self, value: PaceCounter) -> None:
        self._pace = value

    @property
    def budget(self) -> UltraCartBudget:
        """The one UltraCart budget (``ultracart`` settings)."""
        if self._budget is None:
            self._budget = UltraCartBudget(
                self.settings.table_name,
                hourly=self.settings.ultracart_hourly_limit,
                daily=self.settings.ultracart_daily_limit,
                callback_reserve=self.settings.ultracart_callback_reserve,
                scope=self.settings.ultracart_budget_scope,
            )
        return self._budget

    @budget.setter
    def budget(self, value: UltraCartBudget) -> None:
        self._budget = value

    @property
    def events(self) -> EventPublisher:
        """The event publisher (``events`` settings)."""
        if self._events is None:
            self._events = EventPublisher(self.settings.event_bus_name)
        return self._events

    @events.setter
    def events(self, value: EventPublisher) -> None:
        self._events = value

    @property
    def ultracart(self) -> UltraCartApi:
        """The UltraCart client (process-wide unless a factory was injected), without the budget."""
        if self.ultracart_factory is not None:
            return self.ultracart_factory()
        from ucoauth.adapters.ultracart import get_client

        return get_client(self.settings)

    def ultracart_for(
        self, tier: Tier, deadline: Deadline, *, merchant_id: str | None = None
    ) -> BudgetedUltraCart:
        """The UltraCart client for a kind of work before ``deadline``, on behalf of ``merchant_id``
        (None while UltraCart has not said whose authorization it is): every call takes from the
        budget first, and waits no longer than leaves time to store its answer
        (:class:`~ucoauth.base.errors.DeadlineTooCloseError`, nothing sent, when there is no such time)."""
        return BudgetedUltraCart(
            self.ultracart,
            self.budget,
            self.clock,
            tier,
            self.settings,
            deadline,
            merchant_id=merchant_id,
            sleep=self.sleep,
            rng=self.rng,
        )

    def now(self) -> int:
        """Current time in whole epoch seconds."""
        return int(self.clock())

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        """Build the collaborators from settings (no AWS call happens here); the pace, the budget
        and the event publisher are built on first use."""
        return cls(
            settings=settings,
            installations=InstallationStore(settings.table_name, shards=settings.due_shards),
            states=StateStore(settings.table_name),
            webhook_ids=WebhookIdStore(settings.table_name),
            # The data-key cache is built on the first token it opens (its age is a tokens setting).
            cipher=TokenCipher(
                settings.kms_key_id, cache=lambda: DataKeyCache(settings.data_key_cache_seconds)
            ),
            receipts=ReceiptStore(settings.table_name),
        )


_lock = threading.Lock()
_services: Services | None = None


def get_services() -> Services:
    """The process-wide services, built from the environment on first use."""
    global _services
    if _services is None:
        with _lock:
            if _services is None:
                _services = Services.from_settings(get_settings())
    return _services


def set_services(services: Services | None) -> None:
    """Inject (or forget, with None) the process-wide services."""
    global _services
    with _lock:
        _services = services


def forget_services() -> None:
    """Forget the process-wide services; the next :func:`get_services` builds them anew."""
    set_services(None)
