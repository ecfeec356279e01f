"""Token encryption: envelope encryption with a KMS data key, bound to the merchant.

Both tokens go into one ciphertext. A write seals them locally (AES-256-GCM, ``cryptography``)
with a data key KMS generated for that merchant (``GenerateDataKey``, the merchant's encryption
context); the key is fetched *before* the UltraCart call that issues the tokens, so nothing
after UltraCart's answer needs KMS. The stored blob carries the wrapped data key and a format
version (:data:`ENVELOPE`); the associated data names the format, the field and the merchant, so
a blob copied onto another merchant's row, or damaged, does not open. A read is one KMS
``Decrypt`` of the wrapped key, then local AES-GCM. Blobs of the first format (the tokens
encrypted by KMS itself) still decrypt; their next write stores the envelope.

A data key KMS opened is kept in memory (:class:`DataKeyCache`): a later read of the same
envelope in the same process makes no KMS call. One key per merchant, matched by the wrapped
key's exact bytes (a new write stores a new one, so a new version never meets the old key),
bounded in count and age, never logged.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.adapters import aws
from ucoauth.base.errors import KeyUnavailableError, TokenDecryptError
from ucoauth.base.observability import logger, metrics

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from mypy_boto3_kms import KMSClient

PURPOSE = "ultracart-oauth-tokens"
# A device authorization's device code (RFC 8628) is a credential until it is spent: encrypted
# with a key of its own (DeviceCodeKey), bound to its authorization id (it has no merchant yet).
DEVICE_CODE_PURPOSE = "ultracart-device-code"
# A probe's data key is generated under a purpose of its own: a role allowed to probe (the revoke
# worker's) gets probe keys for a merchant, never a data key that seals that merchant's tokens.
PROBE_PURPOSE = "ultracart-oauth-key-probe"

# The envelope (format 2): ENVELOPE, the wrapped data key's length (2 bytes, big-endian), the
# wrapped data key (a KMS ciphertext), a 12-byte nonce, then AES-GCM's ciphertext and 16-byte tag.
# A blob of format 1 is a KMS ciphertext of the tokens (it starts with KMS's own version byte,
# 0x01; moto's with the key id), never with these four bytes.
ENVELOPE = b"UCT\x02"
FIELD = "tokens"  # what the blob holds, named in the associated data
_NONCE = 12
_TAG = 16


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


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class DataKey:
    """A data key KMS generated for one merchant: the key itself (in memory only, never logged)
    and the same key wrapped by KMS under the merchant's encryption context (stored beside the
    ciphertext). Sealing is local: it cannot fail because of KMS."""

    merchant_id: str
    wrapped: bytes = field(repr=False)
    key: bytes = field(repr=False)

    def seal(self, tokens: TokenSet) -> bytes:
        """The envelope of ``tokens``: a fresh nonce per call, bound to the merchant and field."""
        plaintext = json.dumps({"a": tokens.access_token, "r": tokens.refresh_token}, separators=(",", ":"))
        nonce = os.urandom(_NONCE)
        sealed = _aesgcm(self.key).encrypt(nonce, plaintext.encode(), associated_data(self.merchant_id))
        return ENVELOPE + struct.pack(">H", len(self.wrapped)) + self.wrapped + nonce + sealed


def associated_data(merchant_id: str, field_name: str = FIELD) -> bytes:
    """AES-GCM's associated data: the format, the field and the merchant the blob belongs to."""
    return b"\x00".join((ENVELOPE, field_name.encode(), merchant_id.encode()))


def _aesgcm(key: bytes) -> AESGCM:
    # Imported on first use: the functions that never touch a token (the planner, the webhook)
    # do not load it on their cold start.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _envelope_parts(blob: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(wrapped key, nonce, ciphertext with tag) of an envelope, None when it is malformed."""
    head = len(ENVELOPE) + 2
    if len(blob) < head:
        return None
    (length,) = struct.unpack(">H", blob[len(ENVELOPE) : head])
    wrapped, rest = blob[head : head + length], blob[head + length :]
    if length == 0 or len(wrapped) != length or len(rest) < _NONCE + _TAG:
        return None
    return wrapped, rest[:_NONCE], rest[_NONCE:]


def _token_set(plaintext: bytes) -> TokenSet:
    data = json.loads(plaintext)
    refresh = data.get("r")
    return TokenSet(access_token=str(data["a"]), refresh_token=str(refresh) if refresh else None)


class DataKeyCache:
    """Data keys KMS opened, in memory: at most ``max_entries`` (one per merchant, the least
    recently used goes first), each for at most ``max_age_seconds`` after KMS opened it (0 turns
    the cache off). A key is served only for the merchant it was opened for and only for the
    exact wrapped key it came from; a different wrapped key for the merchant (a new version of
    its tokens) replaces it. Its ``repr`` shows the count alone."""

    MAX_ENTRIES = 10_000  # about 0.5 KB each (a wrapped key, the key, the entry): 5 MB at most

    def __init__(
        self,
        max_age_seconds: float = 3600,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_age = max_age_seconds
        self._max_entries = max_entries
        self._clock = clock
        # merchant id -> (wrapped key, key, when KMS opened it): a tuple, not a class, for the cold
        # start of every function that imports this module.
        self._entries: OrderedDict[str, tuple[bytes, bytes, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, merchant_id: str, wrapped: bytes) -> bytes | None:
        """The key ``wrapped`` opens for ``merchant_id``, if KMS opened it here recently enough."""
        with self._lock:
            entry = self._entries.get(merchant_id)
            if entry is None:
                return None
            stored, key, opened_at = entry
            if stored != wrapped or self._clock() - opened_at >= self._max_age:
                del self._entries[merchant_id]
                return None
            self._entries.move_to_end(merchant_id)
            return key

    def put(self, merchant_id: str, wrapped: bytes, key: bytes) -> None:
        """Keep the key KMS just opened from ``wrapped`` for ``merchant_id`` (replacing its last)."""
        if self._max_age <= 0 or self._max_entries <= 0:
            return
        with self._lock:
            self._entries[merchant_id] = (wrapped, key, self._clock())
            self._entries.move_to_end(merchant_id)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def forget(self, merchant_id: str) -> None:
        """Drop the merchant's key (its tokens are about to be written anew)."""
        with self._lock:
            self._entries.pop(merchant_id, None)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"DataKeyCache({len(self._entries)} keys)"


class TokenCipher:
    """Seals and opens a merchant's :class:`TokenSet` with data keys of one KMS key; the keys KMS
    opened are kept in ``cache`` (none by default; the wiring gives the functions one)."""

    def __init__(
        self,
        key_id: str,
        kms_client: Callable[[], KMSClient] = aws.kms,
        *,
        cache: DataKeyCache | Callable[[], DataKeyCache] | None = None,
    ) -> None:
        self._key_id = key_id
        self._kms = kms_client
        self._cache = cache

    @property
    def cache(self) -> DataKeyCache:
        """The data keys this cipher keeps (built on first use when given as a factory)."""
        if self._cache is None:
            self._cache = DataKeyCache(max_age_seconds=0)
        elif not isinstance(self._cache, DataKeyCache):
            self._cache = self._cache()
        return self._cache

    def __repr__(self) -> str:
        return f"TokenCipher({self._key_id!r})"

    def _generate(self, merchant_id: str, purpose: str = PURPOSE) -> tuple[bytes, bytes]:
        """(plaintext key, wrapped key) of a new AES-256 data key; KeyUnavailableError if KMS refuses."""
        try:
            answer = self._kms().generate_data_key(
                KeyId=self._key_id,
                KeySpec="AES_256",
                EncryptionContext=encryption_context(merchant_id, purpose),
            )
        except (ClientError, BotoCoreError) as exc:
            raise _key_unavailable(exc, merchant_id) from None
        return answer["Plaintext"], answer["CiphertextBlob"]

    def _decrypt(self, merchant_id: str, blob: bytes, purpose: str = PURPOSE) -> bytes:
        answer = self._kms().decrypt(
            CiphertextBlob=blob,
            EncryptionContext=encryption_context(merchant_id, purpose),
            KeyId=self._key_id,
        )
        return answer["Plaintext"]

    def data_key(self, merchant_id: str) -> DataKey:
        """A new data key for ``merchant_id`` (one KMS call): fetched before UltraCart is asked for
        tokens, so sealing its answer needs no KMS. KeyUnavailableError if KMS refuses. The key
        cached for the merchant's current tokens is dropped: they are about to be replaced."""
        self.cache.forget(merchant_id)
        key, wrapped = self._generate(merchant_id)
        return DataKey(merchant_id=merchant_id, wrapped=wrapped, key=key)

    def encrypt(self, merchant_id: str, tokens: TokenSet) -> bytes:
        """The envelope of both tokens under a new data key (one KMS call); KeyUnavailableError if
        KMS refuses. For tokens already issued whose merchant was not known before (an install)."""
        return self.data_key(merchant_id).seal(tokens)

    def decrypt(self, merchant_id: str, blob: bytes) -> TokenSet:
        """The tokens inside ``blob`` (an envelope, or a blob of the first format): one KMS call,
        none when the envelope's data key is in the cache.

        :class:`KeyUnavailableError` when KMS refuses to work (wrong key id, access denied, a
        disabled or pending key, throttling, an outage): no state may change because of it.
        :class:`TokenDecryptError` only on evidence that the blob itself is damaged: KMS answers
        ``InvalidCiphertextException`` for it (or for its wrapped key) while a fresh probe with the
        same key for this merchant works; an envelope that is malformed (with the probe working);
        or an envelope whose wrapped key KMS opened but whose AES-GCM tag does not verify (the
        ciphertext was changed, or the blob belongs to another merchant or field).
        """
        if not blob.startswith(ENVELOPE):
            return _token_set(self._unwrap(merchant_id, blob))
        parts = _envelope_parts(blob)
        if parts is None:
            self._probe(merchant_id)
            raise self._damaged(merchant_id)
        wrapped, nonce, sealed = parts
        key = self.cache.get(merchant_id, wrapped)
        if key is None:
            key = self._unwrap(merchant_id, wrapped)
            self.cache.put(merchant_id, wrapped, key)
        from cryptography.exceptions import InvalidTag

        try:
            plaintext = _aesgcm(key).decrypt(nonce, sealed, associated_data(merchant_id))
        except (InvalidTag, ValueError):
            raise self._damaged(merchant_id) from None
        return _token_set(plaintext)

    def _unwrap(self, merchant_id: str, blob: bytes) -> bytes:
        """KMS Decrypt of ``blob`` for this merchant, with the damaged-row evidence rules."""
        try:
            return self._decrypt(merchant_id, blob)
        except ClientError as exc:
            if _code(exc) != "InvalidCiphertextException":
                raise _key_unavailable(exc, merchant_id) from None
            self._probe(merchant_id)
            raise self._damaged(merchant_id) from None
        except BotoCoreError as exc:
            raise _key_unavailable(exc, merchant_id) from None

    @staticmethod
    def _damaged(merchant_id: str) -> TokenDecryptError:
        metrics.add_metric(name="TokensUndecryptable", unit="Count", value=1)
        logger.error("stored tokens are damaged: they do not open, the key works", merchant_id=merchant_id)
        return TokenDecryptError("stored tokens do not decrypt for this merchant")

    def _probe(self, merchant_id: str) -> None:
        """Generate a data key for this merchant under the probe's purpose and decrypt its wrapped
        copy: raises KeyUnavailableError unless both work."""
        key, wrapped = self._generate(merchant_id, PROBE_PURPOSE)
        try:
            if self._decrypt(merchant_id, wrapped, PROBE_PURPOSE) != key:  # pragma: no cover
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
