"""One UltraCart budget for every call the stack makes (exchange, me, refresh, revoke).

UltraCart allows 1,000 requests an hour and 10,000 a day per application (and per IP). Every
call any function makes takes one unit from a shared counter first, in both windows at once:
one DynamoDB item per UTC day holds the day's count and one count per hour, updated by a
single conditional ``UpdateItem``. Background work (refreshes, revokes, the token API) may use
the limits less a reserve; a merchant waiting in the browser (the callback's code exchange and
``/oauth/me``) may use the whole limit, so an install still goes through when refreshes have
used their share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from botocore.exceptions import ClientError

from ucoauth import aws
from ucoauth.errors import AppCredentialsRejectedError, BudgetExhaustedError, DeadlineTooCloseError
from ucoauth.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from ucoauth.settings import Settings
    from ucoauth.timing import Deadline
    from ucoauth.ultracart import (
        DeviceAuthorization,
        MerchantInfo,
        RevokeResponse,
        TokenResponse,
        UltraCartApi,
    )

Tier = Literal["callback", "background"]
T = TypeVar("T")
HOUR = 3600
DAY = 86_400
BUDGET_PK = "BUDGET#ultracart"


class UltraCartBudget:
    """The shared counter. ``take`` before every UltraCart call; it raises when the window is spent."""

    def __init__(
        self,
        table_name: str,
        *,
        hourly: int,
        daily: int,
        callback_reserve: float,
        client: Callable[[], DynamoDBClient] = aws.dynamodb,
    ) -> None:
        self.table_name = table_name
        self.hourly = hourly
        self.daily = daily
        self.callback_reserve = callback_reserve
        self._ddb = client

    def limits(self, tier: Tier) -> tuple[int, int]:
        """(hourly, daily) calls this tier may use."""
        if tier == "callback":
            return self.hourly, self.daily
        keep = 1.0 - self.callback_reserve
        return max(1, int(self.hourly * keep)), max(1, int(self.daily * keep))

    @staticmethod
    def _key(now: float) -> dict[str, Any]:
        day = int(now // DAY) * DAY
        return {"pk": {"S": BUDGET_PK}, "sk": {"S": str(day)}}

    @staticmethod
    def _hour_attribute(now: float) -> str:
        return f"h{int(now % DAY // HOUR):02d}"

    def take(self, now: float, tier: Tier) -> None:
        """Take one call from both windows; :class:`BudgetExhaustedError` (with the seconds until
        the window that is spent resets) when either is spent for ``tier``."""
        hourly, daily = self.limits(tier)
        day_start = int(now // DAY) * DAY
        try:
            self._ddb().update_item(
                TableName=self.table_name,
                Key=self._key(now),
                UpdateExpression="ADD used :one, #h :one SET #ttl = :ttl",
                ConditionExpression=(
                    "(attribute_not_exists(used) OR used < :daily) AND "
                    "(attribute_not_exists(#h) OR #h < :hourly)"
                ),
                ExpressionAttributeNames={"#h": self._hour_attribute(now), "#ttl": "ttl"},
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":daily": {"N": str(daily)},
                    ":hourly": {"N": str(hourly)},
                    ":ttl": {"N": str(day_start + 2 * DAY)},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            old: Any = exc.response.get("Item") or {}
            day_used = int(old.get("used", {}).get("N", "0"))
            if day_used >= daily:
                raise BudgetExhaustedError(day_start + DAY - now) from None
            raise BudgetExhaustedError(int(now // HOUR) * HOUR + HOUR - now) from None

    def used(self, now: float) -> tuple[int, int]:
        """(this hour, today) calls counted so far (one consistent read)."""
        item = (
            self._ddb()
            .get_item(TableName=self.table_name, Key=self._key(now), ConsistentRead=True)
            .get("Item", {})
        )
        hour = int(item.get(self._hour_attribute(now), {}).get("N", "0"))
        return hour, int(item.get("used", {}).get("N", "0"))


class BudgetedUltraCart:
    """An UltraCart client for one invocation: before every call it checks that the call and the
    write reserve fit before the deadline (shortening the read timeout to fit), then takes one
    unit of the budget. Nothing is sent when either says no.

    When UltraCart refuses the app itself (:class:`AppCredentialsRejectedError`), the client
    secret is read again; if a new version is in use, the same call is sent once more (UltraCart
    did not consume the refused one; the second call takes its own unit). A refusal that stands
    is counted (metric ``AppCredentialsRejected``, alarmed) and raised.
    """

    def __init__(
        self,
        client: UltraCartApi,
        budget: UltraCartBudget,
        clock: Callable[[], float],
        tier: Tier,
        settings: Settings,
        deadline: Deadline,
    ) -> None:
        self._client = client
        self._budget = budget
        self._clock = clock
        self._settings = settings
        self._deadline = deadline
        self.tier: Tier = tier

    def _ready(self) -> UltraCartApi:
        from ucoauth.timing import read_timeout_within
        from ucoauth.ultracart import UltraCartClient

        read = read_timeout_within(self._settings, self._deadline)
        if read is None:
            raise DeadlineTooCloseError(self._deadline.remaining())
        self._budget.take(self._clock(), self.tier)
        if isinstance(self._client, UltraCartClient) and read < self._settings.ultracart_read_timeout:
            return self._client.with_read_timeout(read)
        return self._client

    def _call(self, send: Callable[[UltraCartApi], T]) -> T:
        from ucoauth.ultracart import UltraCartClient

        try:
            return send(self._ready())
        except AppCredentialsRejectedError as refused:
            renewed = isinstance(self._client, UltraCartClient) and self._client.renew_credentials(refused)
            if not renewed:
                _count_refusal(refused)
                raise
        try:
            return send(self._ready())
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
        return self._ready().me(access_token)  # the merchant's token authenticates it, not the app

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
