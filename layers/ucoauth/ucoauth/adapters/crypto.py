"""Token encryption with KMS, bound to the merchant by the encryption context.

Both tokens go into one ciphertext (one Encrypt per write, one Decrypt per read). The
context names the merchant and the purpose, so a ciphertext copied onto another merchant's
row, or reused for another purpose, does not decrypt.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters import aws
from ucoauth.base.errors import KeyUnavailableError, TokenDecryptError
from ucoauth.base.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

PURPOSE = "ultracart-oauth-tokens"
# A device authorization's device code (RFC 8628) is a credential until it is spent: encrypted
# with a key of its own (DeviceCodeKey), bound to its authorization id (it has no merchant yet).
DEVICE_CODE_PURPOSE = "ultracart-device-code"
_PROBE = b"ucoauth key probe"
# A probe is encrypted under a purpose of its own: a role allowed to probe (the revoke worker's)
# can encrypt probes for a merchant, never a ciphertext that would pass for that merchant's tokens.
PROBE_PURPOSE = "ultracart-oauth-key-probe"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _key_unavailable(exc: ClientError | BotoCoreError, merchant_id: str) -> KeyUnavailableError:
    """KMS refused to work (key id, permissions, key state, throttling, an outage): a fault of the
    key or its configuration, alarmed, never a reason to change a merchant's state."""
    code = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    metrics.add_metric(name="KeyUnavailable", unit="Count", value=1)
    logger.error("KMS refused to use the token key", merchant_id=merchant_id, error=code)
    return KeyUnavailableError(f"KMS refused to use the token key ({code})")


def _device_key_unavailable(exc: ClientError | BotoCoreError) -> KeyUnavailableError:
    code = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    metrics.add_metric(name="KeyUnavailable", unit="Count", value=1)
    logger.error("KMS refused to use the token key for a device code", error=code)
    return KeyUnavailableError(f"KMS refused to use the token key ({code})")


@dataclass(frozen=True, slots=True)
class TokenSet:
    """The secret part of an installation. Never logged: excluded from ``repr``."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)


def encryption_context(merchant_id: str, purpose: str = PURPOSE) -> dict[str, str]:
    """The KMS encryption context for a merchant's tokens (the key policy requires merchant_id), or
    with ``purpose`` for another use of the key for that merchant (the key probe)."""
    return {"merchant_id": merchant_id, "purpose": purpose}


def device_code_context(authorization_id: str) -> dict[str, str]:
    """The KMS encryption context of a device code (the device-code key's policy requires it)."""
    return {"authorization_id": authorization_id, "purpose": DEVICE_CODE_PURPOSE}


class TokenCipher:
    """Encrypts and decrypts a merchant's :class:`TokenSet` with one KMS key."""

    def __init__(self, key_id: str, kms_client: Callable[[], KMSClient] = aws.kms) -> None:
        self._key_id = key_id
        self._kms = kms_client

    def _encrypt(self, merchant_id: str, plaintext: bytes, purpose: str = PURPOSE) -> bytes:
        try:
            answer = self._kms().encrypt(
                KeyId=self._key_id,
                Plaintext=plaintext,
                EncryptionContext=encryption_context(merchant_id, purpose),
            )
        except (ClientError, BotoCoreError) as exc:
            raise _key_unavailable(exc, merchant_id) from None
        return answer["CiphertextBlob"]

    def _decrypt(self, merchant_id: str, blob: bytes, purpose: str = PURPOSE) -> bytes:
        answer = self._kms().decrypt(
            CiphertextBlob=blob,
            EncryptionContext=encryption_context(merchant_id, purpose),
            KeyId=self._key_id,
        )
        return answer["Plaintext"]

    def encrypt(self, merchant_id: str, tokens: TokenSet) -> bytes:
        """Ciphertext of both tokens, bound to ``merchant_id``; KeyUnavailableError if KMS refuses."""
        plaintext = json.dumps({"a": tokens.access_token, "r": tokens.refresh_token}, separators=(",", ":"))
        return self._encrypt(merchant_id, plaintext.encode())

    def decrypt(self, merchant_id: str, blob: bytes) -> TokenSet:
        """The tokens inside ``blob``.

        :class:`KeyUnavailableError` when KMS refuses to work (wrong key id, access denied, a
        disabled or pending key, throttling, an outage): no state may change because of it.
        :class:`TokenDecryptError` only on evidence that the blob itself is damaged: KMS answers
        ``InvalidCiphertextException`` for it while a fresh probe, encrypted and decrypted with
        the same key for this merchant, succeeds (so the key, its rights and the merchant work).
        """
        try:
            plaintext = self._decrypt(merchant_id, blob)
        except ClientError as exc:
            if _code(exc) != "InvalidCiphertextException":
                raise _key_unavailable(exc, merchant_id) from None
            self._probe(merchant_id)
            metrics.add_metric(name="TokensUndecryptable", unit="Count", value=1)
            logger.error(
                "stored tokens are damaged: KMS rejects them, the key works", merchant_id=merchant_id
            )
            raise TokenDecryptError("stored tokens do not decrypt for this merchant") from None
        except BotoCoreError as exc:
            raise _key_unavailable(exc, merchant_id) from None
        data = json.loads(plaintext)
        refresh = data.get("r")
        return TokenSet(access_token=str(data["a"]), refresh_token=str(refresh) if refresh else None)

    def _probe(self, merchant_id: str) -> None:
        """Encrypt and decrypt a probe for this merchant (under the probe's purpose): raises
        KeyUnavailableError unless both work."""
        blob = self._encrypt(merchant_id, _PROBE, PROBE_PURPOSE)
        try:
            if (
                self._decrypt(merchant_id, blob, PROBE_PURPOSE) != _PROBE
            ):  # pragma: no cover - KMS returns what it got
                raise KeyUnavailableError("KMS returned a different probe")
        except (ClientError, BotoCoreError) as exc:
            raise _key_unavailable(exc, merchant_id) from None


class DeviceCodeCipher:
    """Encrypts a device authorization's device code with the device-code key (not the token key),
    bound to the authorization id by the encryption context."""

    def __init__(self, key_id: str, kms_client: Callable[[], KMSClient] = aws.kms) -> None:
        self._key_id = key_id
        self._kms = kms_client

    def encrypt(self, authorization_id: str, device_code: str) -> bytes:
        """Ciphertext of a device code, bound to its authorization; KeyUnavailableError if KMS refuses."""
        try:
            answer = self._kms().encrypt(
                KeyId=self._key_id,
                Plaintext=device_code.encode(),
                EncryptionContext=device_code_context(authorization_id),
            )
        except (ClientError, BotoCoreError) as exc:
            raise _device_key_unavailable(exc) from None
        return answer["CiphertextBlob"]

    def decrypt(self, authorization_id: str, blob: bytes) -> str:
        """The device code inside ``blob``; KeyUnavailableError when KMS refuses (the caller retries)."""
        try:
            answer = self._kms().decrypt(
                CiphertextBlob=blob,
                EncryptionContext=device_code_context(authorization_id),
                KeyId=self._key_id,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _device_key_unavailable(exc) from None
        return answer["Plaintext"].decode()
