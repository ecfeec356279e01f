"""Token encryption: one ciphertext per installation, bound to its merchant."""

from __future__ import annotations

import boto3
import pytest

from devstack.resources import LocalResources
from ucoauth.adapters.crypto import TokenCipher, TokenSet, encryption_context
from ucoauth.base.errors import TokenDecryptError


def test_tokens_round_trip_and_are_not_in_the_ciphertext(aws: LocalResources) -> None:
    cipher = TokenCipher(aws.key_id)
    tokens = TokenSet(access_token="access-secret-1234567890", refresh_token="refresh-secret-1234567890")
    blob = cipher.encrypt("DEMO1", tokens)
    assert b"secret-1234567890" not in blob
    assert cipher.decrypt("DEMO1", blob) == tokens
    assert "secret" not in repr(tokens)


def test_a_ciphertext_moved_to_another_merchant_does_not_decrypt(aws: LocalResources) -> None:
    cipher = TokenCipher(aws.key_id)
    blob = cipher.encrypt("DEMO1", TokenSet(access_token="a" * 30, refresh_token=None))
    with pytest.raises(TokenDecryptError):
        cipher.decrypt("OTHER", blob)


def test_the_context_names_merchant_and_purpose(aws: LocalResources) -> None:
    blob = TokenCipher(aws.key_id).encrypt("DEMO1", TokenSet(access_token="a" * 30, refresh_token="r" * 30))
    kms = boto3.client("kms", region_name=aws.region)
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"merchant_id": "DEMO1"})
    plain = kms.decrypt(CiphertextBlob=blob, EncryptionContext=encryption_context("DEMO1"))
    assert b"r" * 30 in plain["Plaintext"]
