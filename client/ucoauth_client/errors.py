"""The client's errors: one base class, one subclass per answer a caller acts on differently."""

from __future__ import annotations


class TokenClientError(Exception):
    """Every error the client raises derives from this one. Messages never carry a token."""


class InvalidRequest(TokenClientError):
    """The stack refused the request as malformed (400): a bad merchant id or parameter."""

    def __init__(self, message: str, *, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


class AccessDenied(TokenClientError):
    """The caller's AWS identity may not call the token API (403): attach the stack's
    ``TokenConsumerPolicyArn`` managed policy to its role."""


class NotInstalled(TokenClientError):
    """The merchant never installed the app, or uninstalled it (404)."""


class ReauthorizationRequired(TokenClientError):
    """UltraCart refused the merchant's grant (409): the merchant must install the app again."""


class Unavailable(TokenClientError):
    """No token can be had now (503 after one retry, a 5xx, or the stack could not be reached);
    ``retry_after`` is the seconds to wait when known."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TokenClientError):
    """UltraCart answered 429 to an SDK call (its limits are per app and per IP); ``retry_after``
    when UltraCart said (it usually does not)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
