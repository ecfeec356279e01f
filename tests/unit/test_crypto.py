"""Token encryption: one envelope per write (a KMS data key, AES-GCM), bound to its merchant."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from devstack.resources import LocalResources
from tests.support.deadlines import a_deadline
from tests.support.fake_ultracart import FakeUltraCart
from tests.support.faults import throttle
from tests.support.installs import install, stored_tokens
from tests.support.roles import harness_boto3_session
from ucoauth.adapters.crypto import ENVELOPE, DataKey, TokenCipher, TokenSet, encryption_context
from ucoauth.adapters.services import Services
from ucoauth.base.errors import KeyUnavailableError, TokenDecryptError
from ucoauth.usecases.refresh import refresh_due

TOKENS = TokenSet(access_token="access-secret-1234567890", refresh_token="refresh-secret-1234567890")


def kms(aws: LocalResources) -> Any:
    return harness_boto3_session(aws.region).client("kms")


def parts(blob: bytes) -> tuple[bytes, bytes]:
    """(wrapped data key, nonce + AES-GCM ciphertext) of an envelope."""
    (length,) = struct.unpack(">H", blob[len(ENVELOPE) : len(ENVELOPE) + 2])
    start = len(ENVELOPE) + 2
    return blob[start : start + length], blob[start + length :]


def envelope(wrapped: bytes, sealed: bytes) -> bytes:
    return ENVELOPE + struct.pack(">H", len(wrapped)) + wrapped + sealed


def legacy_blob(aws: LocalResources, merchant_id: str, tokens: TokenSet) -> bytes:
    """A ciphertext of the first format: the tokens encrypted by KMS itself (Encrypt)."""
    plaintext = json.dumps({"a": tokens.access_token, "r": tokens.refresh_token}, separators=(",", ":"))
    answer = kms(aws).encrypt(
        KeyId=aws.key_id, Plaintext=plaintext.encode(), EncryptionContext=encryption_context(merchant_id)
    )
    return bytes(answer["CiphertextBlob"])


def test_tokens_round_trip_in_an_envelope_and_are_not_in_it(aws: LocalResources) -> None:
    cipher = TokenCipher(aws.key_id)
    blob = cipher.encrypt("DEMO1", TOKENS)
    assert blob.startswith(ENVELOPE)
    assert b"secret-1234567890" not in blob
    assert cipher.decrypt("DEMO1", blob) == TOKENS
    assert "secret" not in repr(TOKENS)
    key = cipher.data_key("DEMO1")
    assert key.key.hex() not in repr(key) and "wrapped" not in repr(key)


def test_sealing_with_a_data_key_in_hand_needs_no_kms(aws: LocalResources) -> None:
    # What a rotation does after UltraCart answered: KMS failing then changes nothing.
    cipher = TokenCipher(aws.key_id)
    key = cipher.data_key("DEMO1")
    with throttle("kms", "GenerateDataKey"), throttle("kms", "Encrypt"):
        blob = key.seal(TOKENS)
        with pytest.raises(KeyUnavailableError):
            cipher.data_key("DEMO1")
    assert cipher.decrypt("DEMO1", blob) == TOKENS


def test_every_seal_has_its_own_nonce(aws: LocalResources) -> None:
    key = TokenCipher(aws.key_id).data_key("DEMO1")
    assert parts(key.seal(TOKENS))[1][:12] != parts(key.seal(TOKENS))[1][:12]


def test_a_ciphertext_moved_to_another_merchant_does_not_decrypt(aws: LocalResources) -> None:
    cipher = TokenCipher(aws.key_id)
    blob = cipher.encrypt("DEMO1", TokenSet(access_token="a" * 30, refresh_token=None))
    with pytest.raises(TokenDecryptError):
        cipher.decrypt("OTHER", blob)


def test_the_other_merchants_wrapped_key_spliced_in_does_not_open_it(aws: LocalResources) -> None:
    # The sealed tokens of DEMO1 behind a wrapped key KMS opens for OTHER: AES-GCM refuses them.
    cipher = TokenCipher(aws.key_id)
    ours = cipher.encrypt("DEMO1", TOKENS)
    theirs = cipher.encrypt("OTHER", TOKENS)
    spliced = envelope(parts(theirs)[0], parts(ours)[1])
    with pytest.raises(TokenDecryptError):
        cipher.decrypt("OTHER", spliced)


def test_the_associated_data_binds_the_merchant(aws: LocalResources) -> None:
    # A data key of DEMO1 used to seal tokens named for OTHER: KMS opens the wrapped key for
    # DEMO1, and AES-GCM refuses the ciphertext (its associated data names another merchant).
    cipher = TokenCipher(aws.key_id)
    real = cipher.data_key("DEMO1")
    misnamed = DataKey(merchant_id="OTHER", wrapped=real.wrapped, key=real.key)
    with pytest.raises(TokenDecryptError):
        cipher.decrypt("DEMO1", misnamed.seal(TOKENS))


@pytest.mark.parametrize("where", ["ciphertext", "tag", "nonce", "wrapped key"])
def test_a_tampered_envelope_is_detected(aws: LocalResources, where: str) -> None:
    cipher = TokenCipher(aws.key_id)
    blob = bytearray(cipher.encrypt("DEMO1", TOKENS))
    wrapped, _ = parts(bytes(blob))
    offset = len(ENVELOPE) + 2 + len(wrapped)
    index = {
        "nonce": offset,
        "ciphertext": offset + 12,
        "tag": len(blob) - 1,
        "wrapped key": len(ENVELOPE) + 2 + len(wrapped) // 2,
    }[where]
    blob[index] ^= 0x01
    with pytest.raises(TokenDecryptError):
        cipher.decrypt("DEMO1", bytes(blob))


@pytest.mark.parametrize("cut", [len(ENVELOPE), len(ENVELOPE) + 2, 40])
def test_a_truncated_envelope_is_damaged(aws: LocalResources, cut: int) -> None:
    cipher = TokenCipher(aws.key_id)
    with pytest.raises(TokenDecryptError):
        cipher.decrypt("DEMO1", cipher.encrypt("DEMO1", TOKENS)[:cut])


def test_a_damaged_envelope_is_not_called_damaged_while_kms_fails(aws: LocalResources) -> None:
    # The damaged-row evidence rule: without a working key there is no evidence, only an outage.
    cipher = TokenCipher(aws.key_id)
    blob = bytearray(cipher.encrypt("DEMO1", TOKENS))
    blob[len(ENVELOPE) + 3] ^= 0x01  # inside the wrapped key: KMS rejects it
    with throttle("kms", "GenerateDataKey"), pytest.raises(KeyUnavailableError):
        cipher.decrypt("DEMO1", bytes(blob))
    with throttle("kms", "Decrypt"), pytest.raises(KeyUnavailableError):
        cipher.decrypt("DEMO1", cipher.encrypt("DEMO1", TOKENS))


def test_the_wrapped_key_needs_the_merchant_and_the_purpose(aws: LocalResources) -> None:
    blob = TokenCipher(aws.key_id).encrypt("DEMO1", TOKENS)
    wrapped, sealed = parts(blob)
    client = kms(aws)
    with pytest.raises(client.exceptions.InvalidCiphertextException):
        client.decrypt(CiphertextBlob=wrapped, EncryptionContext={"merchant_id": "DEMO1"})
    key = client.decrypt(CiphertextBlob=wrapped, EncryptionContext=encryption_context("DEMO1"))["Plaintext"]
    assert len(key) == 32  # AES-256
    assert b"secret" not in wrapped + sealed


def test_a_ciphertext_of_the_first_format_still_decrypts(aws: LocalResources) -> None:
    cipher = TokenCipher(aws.key_id)
    old = legacy_blob(aws, "DEMO1", TOKENS)
    assert not old.startswith(ENVELOPE)
    assert cipher.decrypt("DEMO1", old) == TOKENS
    with pytest.raises(TokenDecryptError):
        cipher.decrypt("OTHER", old)


def test_an_item_of_the_first_format_is_refreshed_and_rewritten_as_an_envelope(
    aws: LocalResources, services: Services, fake_uc: FakeUltraCart
) -> None:
    fake_uc.expires_in = 600
    install(services, fake_uc)
    current = stored_tokens(services, "DEMO1")
    installation = services.installations.get("DEMO1")
    assert installation is not None and installation.tokens_ciphertext is not None
    # The same tokens of the same installation, as a write before envelope encryption stored them
    # (in place: a reinstall would keep the grant it replaces for its revoke).
    harness_boto3_session(aws.region).client("dynamodb").update_item(
        TableName=aws.table_name,
        Key={"pk": {"S": "MERCHANT#DEMO1"}, "sk": {"S": "INSTALLATION"}},
        UpdateExpression="SET tokens = :t, due_at = :now",
        ExpressionAttributeValues={
            ":t": {"B": legacy_blob(aws, "DEMO1", current)},
            ":now": {"N": str(int(services.now()))},
        },
    )
    before = services.installations.get("DEMO1")
    assert before is not None and before.tokens_ciphertext is not None
    assert not before.tokens_ciphertext.startswith(ENVELOPE)
    assert refresh_due(services, "DEMO1", deadline=a_deadline(services)) == "refreshed"
    after = services.installations.get("DEMO1")
    assert after is not None and after.tokens_ciphertext is not None
    assert after.tokens_ciphertext.startswith(ENVELOPE)
    assert stored_tokens(services, "DEMO1").refresh_token != current.refresh_token
    assert fake_uc.calls == ["exchange", "refresh"]
