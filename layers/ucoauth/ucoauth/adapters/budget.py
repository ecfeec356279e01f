"""One UltraCart budget for every call the stack makes (exchange, me, refresh, revoke).

UltraCart allows 1,000 requests an hour and 10,000 a day "per authorized application and per IP",
and answers 429 to concurrent requests for the same application. Every call any function makes
takes one unit first, in an hourly and a daily window at once (``ucoauth.adapters.windows``). Background
work (refreshes, revokes, the token API) may use the limits less a reserve; a merchant waiting in
the browser (the callback's code exchange and ``/oauth/me``) may use the whole limit, so an
install still goes through when refreshes have used their share.

Where the windows count is the budget's scope, since UltraCart's words allow three readings:

- ``application``: every merchant's calls together in one pair of windows, one call at a time;
- ``merchant``: each merchant's authorization has its own windows; a call made before its
  merchant is known (a code exchange, ``/oauth/me`` after it, the device flow) counts in the
  application's. One call at a time per merchant is the lease's guarantee;
- ``both``: a call needs room in the application's windows and in its merchant's, one at a time.

"One at a time" is the line: counting a call in the application's windows also takes the line
(one write), the call is made, the line is given back. A holder that dies loses it once its
hold (the call's connect and read timeouts) ends.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters import aws
from ucoauth.adapters.windows import APPLICATION_PK, DAY, HOUR, Line, WindowItems, day_start, merchant_pk
from ucoauth.base.errors import (
    AppCredentialsRejectedError,
    BudgetExhaustedError,
    DeadlineTooCloseError,
    UltraCartBusyError,
)
from ucoauth.base.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from ucoauth.adapters.ultracart import (
        DeviceAuthorization,
        MerchantInfo,
        RevokeResponse,
        TokenResponse,
        UltraCartApi,
    )
    from ucoauth.base.settings import BudgetScope, Settings
    from ucoauth.base.timing import Deadline

__all__ = ["DAY", "HOUR", "BudgetedUltraCart", "Tier", "UltraCartBudget"]

Tier = Literal["callback", "background"]
T = TypeVar("T")
# The longest hold on the line (a call's connect + read timeout and a second, at the settings'
# maxima). A call in the first LINE_HOLD_LIMIT seconds of a UTC day also takes the line on the
# previous day's item, where the day's last call may still hold it.
LINE_HOLD_LIMIT = 190.0


class UltraCartBudget:
    """The budget's windows in its scope. ``take`` before every UltraCart call; it raises when a
    window is spent (or, with ``hold``, while another call holds the line)."""

    def __init__(
        self,
        table_name: str,
        *,
        hourly: int,
        daily: int,
        callback_reserve: float,
        scope: BudgetScope = "application",
        client: Callable[[], DynamoDBClient] = aws.dynamodb,
    ) -> None:
        self.table_name = table_name
        self.hourly = hourly
        self.daily = daily
        self.callback_reserve = callback_reserve
        self.scope: BudgetScope = scope
        self._items = WindowItems(table_name, client)

    @property
    def serialises(self) -> bool:
        """Whether calls go out one at a time for the whole application (the line)."""
        return self.scope != "merchant"

    @property
    def counts_refreshes(self) -> bool:
        """Whether a refresh (a call for a known merchant) counts in the application's windows."""
        return self.scope != "merchant"

    def limits(self, tier: Tier) -> tuple[int, int]:
        """(hourly, daily) calls this tier may use, in each window."""
        if tier == "callback":
            return self.hourly, self.daily
        keep = 1.0 - self.callback_reserve
        return max(1, int(self.hourly * keep)), max(1, int(self.daily * keep))

    def take(
        self, now: float, tier: Tier, merchant_id: str | None = None, *, hold: float | None = None
    ) -> Line | None:
        """Count one call for ``merchant_id`` (None: not known yet) in the windows of the scope.

        With ``hold`` (seconds the call may take) in a scope that serialises, also take the line:
        the :class:`~ucoauth.adapters.windows.Line` to :meth:`release` after the call. Raises
        :class:`BudgetExhaustedError` (seconds until the spent window resets) or
        :class:`UltraCartBusyError` (the line is held); then nothing is counted or held.
        """
        hourly, daily = self.limits(tier)
        in_application = self.counts_refreshes or merchant_id is None
        line = self._line(now, hold) if hold is not None and self.serialises else None
        if in_application:
            self._count_application(now, hourly, daily, line)
        if merchant_id is not None and self.scope != "application":
            try:
                self._items.count(merchant_pk(merchant_id), now, hourly=hourly, daily=daily)
            except BudgetExhaustedError:
                if in_application:
                    self._items.give_back(APPLICATION_PK, now)
                if line is not None:
                    self.release(line)
                raise
        return line

    @staticmethod
    def _line(now: float, hold: float) -> Line:
        today = day_start(now)
        days = (today - DAY, today) if now - today < LINE_HOLD_LIMIT else (today,)
        return Line(owner=uuid.uuid4().hex, until=now + min(hold, LINE_HOLD_LIMIT), days=days)

    def _count_application(self, now: float, hourly: int, daily: int, line: Line | None) -> None:
        earlier = line.days[:-1] if line is not None else ()
        if line is not None:
            for day in earlier:
                self._items.hold(APPLICATION_PK, day, line, now)
        try:
            self._items.count(APPLICATION_PK, now, hourly=hourly, daily=daily, line=line)
        except BudgetExhaustedError:
            if line is not None and earlier:
                self._items.release(APPLICATION_PK, line, days=earlier)
            raise

    def release(self, line: Line) -> None:
        """Give the line back (where it is still this holder's)."""
        self._items.release(APPLICATION_PK, line)

    def used(self, now: float, merchant_id: str | None = None) -> tuple[int, int]:
        """(this hour, today) calls counted so far in the application's windows, or in a
        merchant's (one consistent read)."""
        return self._items.used(APPLICATION_PK if merchant_id is None else merchant_pk(merchant_id), now)


class BudgetedUltraCart:
    """An UltraCart client for one invocation: before every call it checks that the call and the
    write reserve fit before the deadline (shortening the read timeout to fit), then takes one
    unit of the budget, and the line where the scope serialises calls (waiting for it while
    another call holds it, at most as long as one call can hold it). Nothing is sent when any of
    these says no. The line is given back as soon as the call ends, whatever its outcome.

    When UltraCart refuses the app itself (:class:`AppCredentialsRejectedError`), the client
    secret is read again; if a new version is in use, the same call is sent once more (UltraCart
    did not consume the refused one; the second call takes its own unit). A refusal that stands
    is counted (metric ``AppCredentialsRejected``, alarmed) and raised."""

    def __init__(
        self,
        client: UltraCartApi,
        budget: UltraCartBudget,
        clock: Callable[[], float],
        tier: Tier,
        settings: Settings,
        deadline: Deadline,
        *,
        merchant_id: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._budget = budget
        self._clock = clock
        self._settings = settings
        self._deadline = deadline
        self._merchant_id = merchant_id
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.tier: Tier = tier

    def _take(self) -> tuple[float, Line | None]:
        """(the read timeout, the line held) for a call made now."""
        from ucoauth.base.timing import read_timeout_within, ultracart_call_max

        serialises = self._budget.serialises
        waited_since = self._clock()
        attempt = 0
        while True:
            read = read_timeout_within(self._settings, self._deadline)
            if read is None:
                raise DeadlineTooCloseError(self._deadline.remaining())
            hold = ultracart_call_max(self._settings, read)
            try:
                return read, self._budget.take(
                    self._clock(), self.tier, self._merchant_id, hold=hold if serialises else None
                )
            except UltraCartBusyError as busy:
                # Calls take well under a second: short, jittered pauses; a line held longer
                # than any call can hold it is a holder that died, free once its hold ends.
                pause = min(busy.busy_for, 0.25, 0.02 * 2**attempt) * self._rng.uniform(0.5, 1.0)
                if self._clock() + pause - waited_since > hold:
                    raise
                self._sleep(max(0.005, pause))
                attempt += 1

    def _send_once(self, send: Callable[[UltraCartApi], T]) -> T:
        from ucoauth.adapters.ultracart import UltraCartClient

        read, line = self._take()
        client = self._client
        if isinstance(client, UltraCartClient) and read < self._settings.ultracart_read_timeout:
            client = client.with_read_timeout(read)
        try:
            return send(client)
        finally:
            if line is not None:
                self._release(line)

    def _release(self, line: Line) -> None:
        """Give the line back, never in the way of storing UltraCart's answer: only while the
        invocation has the time for this write and the whole write reserve after it, and a
        failure is only logged. A line not given back ends with its hold."""
        from ucoauth.base.timing import AWS_CALL_MAX, WRITE_RESERVE

        if not self._deadline.allows(WRITE_RESERVE + AWS_CALL_MAX):
            logger.info("UltraCart line left to end with its hold: the answer's writes come first")
            return
        try:
            self._budget.release(line)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("UltraCart line not released; it ends with its hold", error=type(exc).__name__)

    def _call(self, send: Callable[[UltraCartApi], T]) -> T:
        from ucoauth.adapters.ultracart import UltraCartClient

        try:
            return self._send_once(send)
        except AppCredentialsRejectedError as refused:
            renewed = isinstance(self._client, UltraCartClient) and self._client.renew_credentials(refused)
            if not renewed:
                _count_refusal(refused)
                raise
        try:
            return self._send_once(send)
        except AppCredentialsRejectedError as refused:
            _count_refusal(refused)
            raise

    def exchange_code(self, code: str, redirect_uri: str) -> TokenResponse:
        return self._call(lambda client: client.exchange_code(code, redirect_uri))

    def refresh(self, refresh_token: str) -> TokenResponse:
        return self._call(lambda client: client.refresh(refresh_token))

    def revoke(self, token: str) -> RevokeResponse:
        return self._call(lambda client: client.revoke(token))

    def me(self, access_token: str) -> MerchantInfo:
        return self._call(lambda client: client.me(access_token))

    def device_authorize(self, scope: str) -> DeviceAuthorization:
        return self._call(lambda client: client.device_authorize(scope))

    def poll_device(self, device_code: str) -> TokenResponse:
        return self._call(lambda client: client.poll_device(device_code))


def _count_refusal(refused: AppCredentialsRejectedError) -> None:
    """One refusal of the app's credentials that stands: alarmed, and nothing per merchant."""
    metrics.add_metric(name="AppCredentialsRejected", unit="Count", value=1)
    logger.error(
        "UltraCart refused the app's client credentials: check the client id and the client secret "
        "in Secrets Manager; work waits and resumes once they are accepted",
        status=refused.status,
        error=refused.error,
    )
