"""Device authorization (RFC 8628): installs where no browser comes back (a point of sale, a CLI).

``POST /device/authorizations`` asks UltraCart for a device code and a user code, stores the
authorization (its device code encrypted with KMS, bound to the authorization id) and queues the
first poll, delayed by UltraCart's interval. The device worker polls UltraCart's token endpoint
once per message and queues the next poll itself: ``interval`` later while the merchant has not
decided, 5 s more (for good) on ``slow_down``. It stops at the expiry (``expired``), a denial
(``denied``) or the tokens (``installed``: stored exactly as the browser callback stores them).

Each poll message carries the poll's sequence number; the worker acts on it only after one
conditional write (the *claim*) finds the authorization pending at that very number and no
other delivery working on it, so a redelivered message never polls twice, and the next number is
queued before the authorization moves to it (a worker that dies in between leaves its own message
to be redelivered, never a gap).
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters import aws
from ucoauth.adapters.crypto import DeviceCodeCipher
from ucoauth.adapters.devices import (
    DENIED,
    EXPIRED,
    INSTALLED,
    PENDING,
    PK_PREFIX,
    DeviceAuthorizationItem,
    DeviceAuthorizationStore,
    PollSkipped,
    is_authorization_id,
)
from ucoauth.adapters.installations.model import ACTIVE
from ucoauth.base.errors import (
    AccountConflictError,
    DeadlineTooCloseError,
    DeviceAuthorizationNotFoundError,
    KeyUnavailableError,
    PermanentUltraCartError,
    QueueSendError,
    RetryLaterError,
    TransientUltraCartError,
    UcOAuthError,
)
from ucoauth.base.observability import logger, metrics
from ucoauth.base.timing import call_needs

if TYPE_CHECKING:
    from ucoauth.adapters.browser_items import AccountLink
    from ucoauth.adapters.services import Services
    from ucoauth.base.timing import Deadline

# A pending authorization past its expiry is reported expired once a poll in flight would have
# settled it (the worker's timeout).
SETTLE_SECONDS = 60
SLOW_DOWN_STEP = 5  # RFC 8628 section 3.5
MAX_DELAY = 900  # SQS's DelaySeconds limit


def device_store(services: Services) -> DeviceAuthorizationStore:
    return DeviceAuthorizationStore(services.settings.table_name)


# -- starting an authorization ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class DeviceStart:
    """What the device shows (the user code, the URI) and the id it asks about. Never logged."""

    authorization_id: str
    user_code: str = field(repr=False)
    verification_uri: str = field(repr=False)
    verification_uri_complete: str = field(repr=False)
    expires_in: int
    interval: int

    def as_json(self) -> dict[str, Any]:
        return {
            "authorization_id": self.authorization_id,
            "user_code": self.user_code,
            "verification_uri": self.verification_uri,
            "verification_uri_complete": self.verification_uri_complete,
            "expires_in": self.expires_in,
            "interval": self.interval,
        }


def poll_message(authorization_id: str, seq: int) -> str:
    return json.dumps({"authorization_id": authorization_id, "seq": seq}, separators=(",", ":"))


def _send_poll(queue_url: str, authorization_id: str, seq: int, delay: float) -> None:
    """Queue poll ``seq``, delivered ``delay`` seconds from now (at most SQS's 15 minutes)."""
    seconds = min(MAX_DELAY, max(0, math.ceil(delay)))
    try:
        aws.sqs().send_message(
            QueueUrl=queue_url, MessageBody=poll_message(authorization_id, seq), DelaySeconds=seconds
        )
    except (ClientError, BotoCoreError) as exc:
        raise QueueSendError(f"device poll not queued ({type(exc).__name__})") from None


def start_device_authorization(
    services: Services, *, scope: str | None, deadline: Deadline, link: AccountLink | None = None
) -> DeviceStart:
    """Ask UltraCart for a device authorization, store it (with ``link``, the app's account the
    installation is linked to), queue its first poll.

    Raises BudgetExhaustedError / DeadlineTooCloseError (nothing sent), UltraCart errors, AWS
    errors, KeyUnavailableError and QueueSendError (then nothing is left pending).
    """
    if not deadline.allows(call_needs(services.settings)):
        raise DeadlineTooCloseError(deadline.remaining())
    settings = services.settings
    wanted = scope or settings.device_scope
    answer = services.ultracart_for("background", deadline).device_authorize(wanted)
    authorization_id = secrets.token_urlsafe(32)
    now = services.now()
    store = device_store(services)
    item = DeviceAuthorizationItem(
        authorization_id=authorization_id,
        device_status=PENDING,
        ciphertext=DeviceCodeCipher(settings.device_key_id).encrypt(authorization_id, answer.device_code),
        scope=wanted,
        interval=answer.interval,
        created_at=now,
        expires_at=now + answer.expires_in,
        poll_seq=0,
        link=link,
    )
    store.create(item)
    try:
        _send_poll(settings.device_queue_url, authorization_id, 0, answer.interval)
    except QueueSendError:
        # Nobody would ever poll it: end it now, so its status does not claim it is pending.
        owner = "start"
        try:
            store.claim(authorization_id, seq=0, owner=owner, now=now, until=now + 60)
            store.finish(authorization_id, seq=0, owner=owner, status=EXPIRED, now=now)
        except (ClientError, BotoCoreError, PollSkipped):
            logger.warning("unqueued device authorization left to expire", authorization_id=authorization_id)
        raise
    metrics.add_metric(name="DeviceAuthorizationStarted", unit="Count", value=1)
    logger.info(
        "device authorization started",
        authorization_id=authorization_id,
        expires_in=answer.expires_in,
        interval=answer.interval,
    )
    return DeviceStart(
        authorization_id=authorization_id,
        user_code=answer.user_code,
        verification_uri=answer.verification_uri,
        verification_uri_complete=answer.verification_uri_complete,
        expires_in=answer.expires_in,
        interval=answer.interval,
    )


def device_status(services: Services, authorization_id: str) -> dict[str, Any]:
    """``{"status", "merchant_id"?}``; DeviceAuthorizationNotFoundError for an unknown id."""
    item = device_store(services).get(authorization_id)
    if item is None:
        raise DeviceAuthorizationNotFoundError(authorization_id)
    status = item.device_status
    if status == PENDING and services.now() >= item.expires_at + SETTLE_SECONDS:
        # Its poll is late (the queue is backed up): UltraCart has expired the code anyway.
        status = EXPIRED
    answer: dict[str, Any] = {"status": status}
    # The merchant of an installed authorization, or of one the stack refused (linked elsewhere).
    if status in (INSTALLED, DENIED) and item.merchant_id:
        answer["merchant_id"] = item.merchant_id
    return answer


# -- the worker: one poll per message -----------------------------------------------------------


def parse_poll_message(body: str) -> tuple[str, int] | None:
    """``(authorization_id, seq)`` of a poll message, or None when malformed."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    authorization_id, seq = data.get("authorization_id"), data.get("seq")
    if not isinstance(authorization_id, str) or not is_authorization_id(authorization_id):
        return None
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 1_000_000:
        return None
    return authorization_id, seq


def poll_device_authorization(
    services: Services, authorization_id: str, seq: int, *, deadline: Deadline
) -> str:
    """Handle poll ``seq`` of an authorization: at most one UltraCart call. Returns what happened:
    ``pending``, ``slow_down``, ``retry``, ``deferred``, ``installed``, ``denied``, ``expired``,
    ``failed``, or why nothing was done (``absent``, ``done``, ``stale``, ``early``, ``busy``)."""
    store = device_store(services)
    owner = secrets.token_hex(8)
    now = services.now()
    try:
        item = store.claim(authorization_id, seq=seq, owner=owner, now=now, until=deadline.lease_until)
    except PollSkipped as skip:
        if skip.reason in ("early", "busy") and skip.item is not None and now < skip.item.expires_at:
            # Another delivery is on it (or its move to this poll is still landing): look again later.
            _send_poll(services.settings.device_queue_url, authorization_id, seq, skip.item.interval)
        return skip.reason
    poll = _Poll(services, store, item, owner, deadline)
    return poll.run()


@dataclass(eq=False, repr=False)
class _Poll:
    services: Services
    store: DeviceAuthorizationStore
    item: DeviceAuthorizationItem
    owner: str
    deadline: Deadline

    @property
    def authorization_id(self) -> str:
        return self.item.authorization_id

    def finish(self, status: str, merchant_id: str | None = None) -> str:
        self.store.finish(
            self.authorization_id,
            seq=self.item.poll_seq,
            owner=self.owner,
            status=status,
            now=self.services.now(),
            merchant_id=merchant_id,
        )
        metrics.add_metric(name=f"DeviceAuthorization{status.capitalize()}", unit="Count", value=1)
        logger.info("device authorization ended", authorization_id=self.authorization_id, status=status)
        return status

    def next_poll(self, delay: int, *, interval: int | None = None) -> None:
        """Queue the next poll, then move the authorization to it (in that order: a worker dying in
        between leaves this message to be redelivered, and the duplicate it queues is dropped)."""
        seq = self.item.poll_seq
        _send_poll(self.services.settings.device_queue_url, self.authorization_id, seq + 1, delay)
        self.store.advance(
            self.authorization_id, seq=seq, owner=self.owner, interval=interval or self.item.interval
        )

    def again_later(self, delay: float) -> None:
        """The same poll later (nothing was sent to UltraCart): re-queued, the claim given back."""
        _send_poll(self.services.settings.device_queue_url, self.authorization_id, self.item.poll_seq, delay)
        self.store.release(self.authorization_id, seq=self.item.poll_seq, owner=self.owner)

    def run(self) -> str:
        item = self.item
        if self.services.now() >= item.expires_at or item.ciphertext is None:
            return self.finish(EXPIRED)
        try:
            cipher = DeviceCodeCipher(self.services.settings.device_key_id)
            device_code = cipher.decrypt(self.authorization_id, item.ciphertext)
            client = self.services.ultracart_for("background", self.deadline)
            answer = client.poll_device(device_code)
        except (RetryLaterError, KeyUnavailableError) as exc:
            # Nothing reached UltraCart (budget, time, the key), or it refused the app itself and
            # consumed nothing (AppCredentialsRejectedError): the same poll, later.
            retry_after = exc.retry_after if isinstance(exc, RetryLaterError) else item.interval
            self.again_later(max(item.interval, retry_after))
            return "deferred"
        except TransientUltraCartError as exc:
            # UltraCart failing (5xx, 429, a timeout): back off, keep the interval.
            logger.warning(
                "device poll failed transiently", authorization_id=self.authorization_id, status=exc.status
            )
            self.next_poll(min(MAX_DELAY, item.interval * 2))
            return "retry"
        except PermanentUltraCartError as exc:
            return self.refused(exc.error)
        # From here UltraCart has issued tokens and the device code is spent: they end stored or
        # revoked (store_new_installation gives them back on any failure), whatever fails.
        self.note_merchant(answer.merchant_id)
        # Imported on approval only: a start or a pending poll never stores an installation.
        from ucoauth.usecases.install import store_new_installation

        try:
            result = store_new_installation(
                self.services,
                client,
                self.deadline,
                answer,
                install_id=f"{PK_PREFIX}{self.authorization_id}",
                began_at=item.created_at,
                link=item.link,
            )
        except AccountConflictError as conflict:
            # The merchant is linked to another account and the rule (InstallRelink=refuse) keeps
            # it so: the grant was given back. Denied, not expired: nothing timed out, and a new
            # authorization for this account would meet the same rule.
            logger.warning(
                "approved device authorization refused: merchant linked to another account",
                authorization_id=self.authorization_id,
                merchant_id=conflict.merchant_id,
            )
            return self.finish(DENIED, merchant_id=conflict.merchant_id)
        except (ClientError, BotoCoreError, UcOAuthError) as exc:
            # Not stored; the tokens were given back (the install logged whether UltraCart
            # confirmed the revoke). The device code is spent: the device starts again.
            logger.error(
                "approved device authorization not stored",
                authorization_id=self.authorization_id,
                error=type(exc).__name__,
            )
            self.finish(EXPIRED)
            return "failed"
        return self.finish(INSTALLED, merchant_id=result.merchant_id)

    def note_merchant(self, merchant_id: str | None) -> None:
        """Note whose tokens this approval holds: only a hint for a redelivery after a crash, so a
        failed write is logged and the tokens are stored all the same."""
        if merchant_id is None:
            return
        try:
            self.store.note_merchant(
                self.authorization_id, seq=self.item.poll_seq, owner=self.owner, merchant_id=merchant_id
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "merchant of an approved device authorization not noted",
                authorization_id=self.authorization_id,
                error=type(exc).__name__,
            )

    def refused(self, error: str | None) -> str:
        item = self.item
        if error == "authorization_pending":
            self.next_poll(item.interval)
            return "pending"
        if error == "slow_down":
            interval = item.interval + SLOW_DOWN_STEP
            self.next_poll(interval, interval=interval)
            return "slow_down"
        if error == "access_denied":
            return self.finish(DENIED)
        if error == "expired_token":
            return self.finish(EXPIRED)
        if error == "invalid_grant" and item.merchant_id is not None:
            # A spent device code after we noted its merchant: our own earlier poll got the tokens
            # and stored them, and its worker died before it could say so.
            installation = self.services.installations.get(item.merchant_id)
            if (
                installation is not None
                and installation.status == ACTIVE
                and installation.installed_at >= item.created_at
            ):
                return self.finish(INSTALLED, merchant_id=item.merchant_id)
        logger.error("UltraCart refused a device poll", authorization_id=self.authorization_id, error=error)
        self.finish(EXPIRED)
        return "failed"
