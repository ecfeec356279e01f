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

from botocore.exceptions import ClientError

from ucoauth import aws
from ucoauth.errors import TokenDecryptError

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

PURPOSE = "ultracart-oauth-tokens"


@dataclass(frozen=True, slots=True)
class TokenSet:
    """The secret part of an installation. Never logged: excluded from ``repr``."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)


def encryption_context(merchant_id: str) -> dict[str, str]:
    """The KMS encryption context for a merchant's tokens (the key policy requires merchant_id)."""
    return {"merchant_id": merchant_id, "purpose": PURPOSE}


class TokenCipher:
    """Encrypts and decrypts a merchant's :class:`TokenSet` with one KMS key."""

    def __init__(self, key_id: str, kms_client: Callable[[], KMSClient] = aws.kms) -> None:
        self._key_id = key_id
        self._kms = kms_client

    def encrypt(self, merchant_id: str, tokens: TokenSet) -> bytes:
        """Ciphertext of both tokens, bound to ``merchant_id``."""
        plaintext = json.dumps({"a": tokens.access_token, "r": tokens.refresh_token}, separators=(",", ":"))
        answer = self._kms().encrypt(
            KeyId=self._key_id,
            Plaintext=plaintext.encode(),
            EncryptionContext=encryption_context(merchant_id),
        )
        return answer["CiphertextBlob"]

    def decrypt(self, merchant_id: str, blob: bytes) -> TokenSet:
        """The tokens inside ``blob``; :class:`TokenDecryptError` if it is not this merchant's."""
        try:
            answer = self._kms().decrypt(
                CiphertextBlob=blob, EncryptionContext=encryption_context(merchant_id), KeyId=self._key_id
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise TokenDecryptError(f"stored tokens do not decrypt for this merchant ({code})") from None
            raise
        data = json.loads(answer["Plaintext"])
        refresh = data.get("r")
        return TokenSet(access_token=str(data["a"]), refresh_token=str(refresh) if refresh else None)
