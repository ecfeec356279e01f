"""The official UltraCart SDK (``ultracart-rest-sdk``, the ``sdk`` extra) wired to a ``TokenClient``.

``ultracart_api_client(tokens, merchant_id)`` returns an ``ultracart.ApiClient`` that every API
class of the SDK accepts (``OrderApi(api_client)``, ...). Each call carries the merchant's current
bearer token and ``X-UltraCart-Api-Version``. When UltraCart answers 401 (the token expired early
or was revoked), the client asks the stack for a token newer than the refused one and retries the
call once; the stack refreshes once however many processes ask. A 429 raises ``RateLimited``.
The SDK is imported here, on first use, so the base client does not need it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ucoauth_client.errors import RateLimited, TokenClientError

if TYPE_CHECKING:
    from ucoauth_client.client import AccessToken, TokenClient

API_VERSION_HEADER = "X-UltraCart-Api-Version"
API_VERSION = "2017-03-01"


def ultracart_api_client(tokens: TokenClient, merchant_id: str, *, host: str | None = None) -> Any:
    """An ``ultracart.ApiClient`` for ``merchant_id`` whose calls use ``tokens`` (see the module)."""
    try:
        from ultracart import Configuration
    except ImportError:
        raise TokenClientError(
            "the UltraCart SDK is not installed: pip install 'ultracart-oauth-client[sdk]'"
        ) from None
    configuration = Configuration(host=host) if host else Configuration()
    return _api_client_class()(tokens, merchant_id, configuration)


@functools.cache
def _api_client_class() -> type[Any]:
    from ultracart import ApiClient
    from ultracart.exceptions import ApiException

    class MerchantApiClient(ApiClient):  # type: ignore[misc]  # the SDK is untyped
        """An SDK ``ApiClient`` that authenticates every call as one merchant."""

        def __init__(self, tokens: TokenClient, merchant_id: str, configuration: Any) -> None:
            super().__init__(configuration, header_name=API_VERSION_HEADER, header_value=API_VERSION)
            self.tokens = tokens
            self.merchant_id = merchant_id

        def call_api(self, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("async_req"):
                # The SDK's thread pool would bypass the token handling below.
                raise TokenClientError("async_req is not supported; call from your own threads")
            token = self.tokens.get(self.merchant_id)
            try:
                return self._as(token, args, kwargs)
            except ApiException as exc:
                if exc.status != 401:
                    raise
            # UltraCart refused this token (expired early, revoked): the stack's newer one, once.
            token = self.tokens.get(self.merchant_id, newer_than=token.version)
            return self._as(token, args, kwargs)

        def _as(self, token: AccessToken, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            auth = {"in": "header", "type": "oauth2", "key": "Authorization", "value": token.authorization}
            try:
                return super().call_api(*args, **{**kwargs, "_request_auths": [auth]})
            except ApiException as exc:
                if exc.status == 429:
                    raise RateLimited(
                        "UltraCart rate limit (429)", retry_after=_retry_after(exc.headers)
                    ) from None
                raise

    return MerchantApiClient


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return None if value is None else max(0.0, float(value))
    except (TypeError, ValueError):
        return None
