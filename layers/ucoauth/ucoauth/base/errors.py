"""Typed domain errors: one base class; HTTP mapping happens only at the edge (handlers)."""

from __future__ import annotations


class UcOAuthError(Exception):
    """Base of every error this package raises on purpose. Messages never carry secrets."""


class ConfigurationError(UcOAuthError):
    """The environment is missing or malformed; raised at cold start."""


# --- UltraCart -------------------------------------------------------------------------


class UltraCartError(UcOAuthError):
    """UltraCart answered with an error or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        rest_error: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.rest_error = rest_error
        self.description = description

    def __str__(self) -> str:
        parts = [self.args[0] if self.args else type(self).__name__]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.error:
            parts.append(f"error={self.error}")
        if self.rest_error:
            parts.append(f"uc_rest_error={self.rest_error}")
        return " ".join(parts)


# OAuth errors that say the app's own registration is wrong (client, scope, response type):
# no merchant action or retry can fix them, only the app's developer.
APP_MISCONFIGURED_ERRORS = frozenset(
    {"unauthorized_client", "invalid_scope", "invalid_client", "unsupported_response_type"}
)
# OAuth errors that refuse the app's client itself (its id or secret), whatever grant the request
# carried: never evidence about a merchant's grant.
APP_REFUSED_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
# How long work refused with the app's credentials waits before it is tried again.
APP_REFUSED_RETRY_SECONDS = 60.0


def refuses_the_app(status: int | None, error: str | None) -> bool:
    """Whether an answer of an endpoint the app's client authenticates to (token, revoke, device
    authorize) refuses the app itself rather than a merchant's grant: ``invalid_client``,
    ``unauthorized_client``, or a 401 that does not say ``invalid_grant``.

    Only ``invalid_grant`` and a 410 say that a merchant's grant is gone.
    """
    return error in APP_REFUSED_ERRORS or (status == 401 and error != "invalid_grant")


class PermanentUltraCartError(UltraCartError):
    """Retrying the same request cannot succeed (invalid_grant, 400, 410, a 401 on ``/oauth/me``)."""

    @property
    def app_misconfigured(self) -> bool:
        """UltraCart refused the app's registration (its scopes, a response type), not this
        merchant's grant."""
        return self.error in APP_MISCONFIGURED_ERRORS

    @property
    def requires_reauthorization(self) -> bool:
        """The merchant must install again: UltraCart says the grant is gone (``invalid_grant``,
        or 410 "Authorized Application Disabled"). A refusal of the app itself never says so."""
        return self.status == 410 or self.error == "invalid_grant"


class TransientUltraCartError(UltraCartError):
    """Worth retrying later with backoff (429, 5xx, timeouts, connection errors, bad bodies)."""


class UltraCartTimeoutError(TransientUltraCartError):
    """UltraCart did not answer within the read (or connect) timeout."""


# --- store and flows -------------------------------------------------------------------


class StateInvalidError(UcOAuthError):
    """The OAuth state is missing, unknown, expired, replayed or not bound to this browser."""


class StateCookieMissingError(StateInvalidError):
    """The browser sent no state cookie: it ran out (its Max-Age is the state's lifetime) or
    the browser refused it. Checked before anything is read or called."""


class StateUnknownError(StateInvalidError):
    """No such state: already used (and deleted), removed by TTL long ago, or never issued."""


class StateExpiredError(StateInvalidError):
    """The state exists but its time ran out (the merchant stayed too long on the consent page)."""


class StateForeignBrowserError(StateInvalidError):
    """The state was issued to a different browser nonce than the cookie this browser sent.

    Usually a second install started in another tab of the same browser replaced the cookie.
    """


class InstallSessionError(UcOAuthError):
    """An install session cannot start or complete an install: unknown, damaged, used or expired.
    The browser gets a page saying so, and is never redirected."""


class InstallSessionUnknownError(InstallSessionError):
    """No such session: never created, malformed, or removed by TTL long ago."""


class InstallSessionUsedError(InstallSessionError):
    """The session already completed an install (a link is good for one installation)."""


class InstallSessionExpiredError(InstallSessionError):
    """The session's time ran out before an install completed through it."""


class InstallSessionRequiredError(InstallSessionError):
    """``RequireInstallSession`` is on and the install came without a session."""


class AccountConflictError(UcOAuthError):
    """The merchant's installation is linked to another account of the app, and the stack's
    rule (``InstallRelink=refuse``) keeps it so. ``merchant_id`` names it."""

    def __init__(self, merchant_id: str) -> None:
        super().__init__(merchant_id)
        self.merchant_id = merchant_id


class NotInstalledError(UcOAuthError):
    """No active installation for this merchant."""


class ReauthorizationRequiredError(UcOAuthError):
    """UltraCart refused the stored grant; the merchant has to install again."""


class UpstreamUnavailableError(UcOAuthError):
    """No valid stored token can be served and UltraCart cannot be asked for one now (it is
    failing, or the budget, the time or an unsettled grant stand in the way). ``retry_after``
    (seconds) when known."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeviceAuthorizationNotFoundError(UcOAuthError):
    """No device authorization has this id (never issued, or its record expired)."""


class LeaseBusyError(UcOAuthError):
    """Another worker holds this merchant's refresh lease (until ``until``, epoch seconds, when known)."""

    def __init__(self, merchant_id: str, *, until: int | None = None) -> None:
        super().__init__(merchant_id)
        self.until = until


class NotDueError(UcOAuthError):
    """The lease was asked for a due installation, and it is no longer due (a sibling refreshed)."""


class StaleWriteError(UcOAuthError):
    """A conditional write lost: the item changed since it was read."""


class RetryLaterError(UcOAuthError):
    """Nothing was attempted; the same request can succeed after ``retry_after`` seconds."""

    reason = "retry later"

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"{self.reason}, retry after {retry_after:.1f}s")
        self.retry_after = max(1.0, retry_after)


class PaceExceededError(RetryLaterError):
    """Background refreshes are smoothed to a pace; the current pace window is spent."""

    reason = "refresh pace exceeded"


class BudgetExhaustedError(RetryLaterError):
    """The UltraCart budget (hourly or daily window) is spent for this kind of call."""

    reason = "UltraCart budget spent"


class UltraCartBusyError(BudgetExhaustedError):
    """Another of the application's UltraCart calls is in flight (UltraCart answers 429 to
    concurrent calls): the budget has no room for this one now. ``busy_for``: seconds until that
    call's hold on the line ends at the latest."""

    reason = "another UltraCart call is in flight"

    def __init__(self, busy_for: float) -> None:
        super().__init__(busy_for)
        self.busy_for = busy_for


class DeadlineTooCloseError(RetryLaterError):
    """The invocation has too little time left to make an UltraCart call and store its answer."""

    reason = "too little time left in this invocation"


class GrantUnsettledError(RetryLaterError):
    """UltraCart refused a refresh token while a previous holder's rotated tokens may still arrive."""

    reason = "a previous holder's tokens may still be recovered"


class LeaseHeldError(RetryLaterError):
    """A queued message met the merchant's lease (busy or held): it comes back once the lease
    can be taken, as a new message, so waiting spends none of its receives toward the DLQ."""

    reason = "the merchant's lease is held"

    @classmethod
    def of(cls, busy: LeaseBusyError, now: float) -> LeaseHeldError:
        """Back when the lease ends (at most SQS's 15 minutes; sooner when its end is unknown)."""
        return cls(min(900.0, (busy.until - now) + 1) if busy.until is not None else 30.0)


class RevokePendingError(RetryLaterError):
    """UltraCart could not confirm a revoke yet; the uninstall is retried until the revoke period
    that started at ``retry_since`` (epoch seconds) ends. ``app_refused_at`` (epoch seconds) when
    this attempt was refused with the app's own credentials: the time until the next attempt
    does not count toward that period."""

    reason = "revoke not confirmed yet"

    def __init__(self, retry_after: float, *, retry_since: int, app_refused_at: int | None = None) -> None:
        super().__init__(retry_after)
        self.retry_since = retry_since
        self.app_refused_at = app_refused_at


class AppCredentialsRejectedError(RetryLaterError, UltraCartError):
    """UltraCart refused the app itself (``invalid_client``, ``unauthorized_client``, a 401
    without ``invalid_grant`` on the token, revoke or device authorize endpoint): a rotated,
    mistyped or revoked client secret, a wrong client id.

    One fault for every merchant at once, never evidence about a merchant's grant: no merchant's
    state changes because of it and no revoke counts as confirmed. UltraCart did not consume the
    request, so the same work is tried again after ``retry_after`` seconds.
    ``credentials_version`` is the client secret's version the refused request was sent with.
    """

    reason = "UltraCart refused the app's client credentials"

    def __init__(
        self,
        retry_after: float = APP_REFUSED_RETRY_SECONDS,
        *,
        status: int | None = None,
        error: str | None = None,
        credentials_version: str | None = None,
    ) -> None:
        super().__init__(retry_after)
        self.status = status
        self.error = error
        self.credentials_version = credentials_version


class KeyUnavailableError(UcOAuthError):
    """KMS refused to use the key (configuration, permissions, key state or throttling).

    A fault of the key or its configuration, never evidence about the stored data: no state
    changes because of it.
    """


class EventRelayError(UcOAuthError):
    """A parked event still could not be published; the queue will bring the merchant back."""


class TokenDecryptError(UcOAuthError):
    """A stored ciphertext is damaged: KMS rejects it while the key works for this merchant."""


class QueueSendError(UcOAuthError):
    """SQS refused some messages even after retries; the caller fails so its trigger retries."""


# --- requests ----------------------------------------------------------------------------
# Kinds of refusal, never status codes: each handler maps the kinds it can meet to its answer.


class RequestTooLargeError(UcOAuthError):
    """A request body is over the size its route accepts (checked once, where it is read)."""


class WebhookRejectedError(UcOAuthError):
    """An uninstall webhook was refused; nothing was recorded or queued. Subclasses say why."""


class WebhookSignatureError(WebhookRejectedError):
    """The webhook is not from the secret's holder: missing or malformed ``webhook-id``, a bad
    signature, or a timestamp outside the tolerance."""


class WebhookPayloadError(WebhookRejectedError):
    """The signed body is not an uninstall: not UTF-8, not JSON, another type, a malformed
    merchant id or timestamp."""
