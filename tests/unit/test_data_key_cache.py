"""The data-key cache: a warm token read opens its envelope without KMS (bounded, per merchant)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from devstack.resources import LocalResources
from tests.support.roles import harness_boto3_session
from ucoauth.adapters.crypto import DataKeyCache, TokenCipher, TokenSet
from ucoauth.base.errors import KeyUnavailableError, TokenDecryptError
from ucoauth.base.settings import Settings

TOKENS = TokenSet(access_token="access-secret-1234567890", refresh_token="refresh-secret-1234567890")
NEWER = TokenSet(access_token="access-secret-newer-98765", refresh_token="refresh-secret-newer-9876")


class CountingKms:
    """A KMS client that counts its Decrypt calls (and can be told to refuse every call)."""

    def __init__(self, aws: LocalResources) -> None:
        self._client = harness_boto3_session(aws.region).client("kms")
        self.decrypts = 0
        self.refusing = False

    def decrypt(self, **kwargs: Any) -> Any:
        self.decrypts += 1
        if self.refusing:
            raise self._client.exceptions.DisabledException(
                {"Error": {"Code": "DisabledException", "Message": "disabled"}}, "Decrypt"
            )
        return self._client.decrypt(**kwargs)

    def generate_data_key(self, **kwargs: Any) -> Any:
        return self._client.generate_data_key(**kwargs)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cached_cipher(aws: LocalResources, kms: CountingKms, **cache: Any) -> tuple[TokenCipher, Clock]:
    clock = Clock()
    client = cast("Any", kms)  # answers the two calls the cipher makes
    cipher = TokenCipher(aws.key_id, kms_client=lambda: client, cache=DataKeyCache(clock=clock, **cache))
    return cipher, clock


def warm(aws: LocalResources, **cache: Any) -> tuple[CountingKms, TokenCipher, Clock, bytes]:
    """A cipher with a cache (an hour unless told), and DEMO1's envelope it has opened once."""
    kms = CountingKms(aws)
    cipher, clock = cached_cipher(aws, kms, **{"max_age_seconds": 3600, **cache})
    blob = cipher.encrypt("DEMO1", TOKENS)
    assert cipher.decrypt("DEMO1", blob) == TOKENS
    return kms, cipher, clock, blob


def test_a_second_read_of_the_same_envelope_makes_no_kms_call(aws: LocalResources) -> None:
    kms, cipher, _, blob = warm(aws)
    assert kms.decrypts == 1
    for _ in range(5):
        assert cipher.decrypt("DEMO1", blob) == TOKENS
    assert kms.decrypts == 1
    # The cache holds keys, not tokens: the same key opens every envelope it sealed, nothing else.
    kms.refusing = True
    assert cipher.decrypt("DEMO1", blob) == TOKENS


def test_a_cached_key_lives_at_most_its_age(aws: LocalResources) -> None:
    kms, cipher, clock, blob = warm(aws, max_age_seconds=600)
    clock.now += 599
    cipher.decrypt("DEMO1", blob)
    assert kms.decrypts == 1
    clock.now += 2  # 601 s after KMS opened it: KMS is asked again, and may refuse
    kms.refusing = True
    with pytest.raises(KeyUnavailableError):
        cipher.decrypt("DEMO1", blob)
    kms.refusing = False
    assert cipher.decrypt("DEMO1", blob) == TOKENS
    assert kms.decrypts == 3


def test_a_new_version_of_the_tokens_drops_the_old_key(aws: LocalResources) -> None:
    kms, cipher, _, _ = warm(aws)
    new = cipher.encrypt("DEMO1", NEWER)  # a refresh wrote new tokens under a new data key
    assert cipher.decrypt("DEMO1", new) == NEWER
    assert kms.decrypts == 2
    assert len(cipher.cache) == 1  # one key per merchant: the old version's is gone
    cipher.decrypt("DEMO1", new)
    assert kms.decrypts == 2


def test_a_cached_key_never_opens_another_merchants_envelope(aws: LocalResources) -> None:
    kms, cipher, _, mine = warm(aws)
    # DEMO1's envelope copied onto DEMO2's row: KMS refuses its key for DEMO2 (the context), and
    # the probe works, so it is damaged; the key cached for DEMO1 is never tried for DEMO2.
    with pytest.raises(TokenDecryptError):
        cipher.decrypt("DEMO2", mine)
    assert kms.decrypts == 3  # DEMO1 once, DEMO2's refused try, the probe's


def test_a_changed_ciphertext_under_a_cached_key_is_damaged(aws: LocalResources) -> None:
    kms, cipher, _, blob = warm(aws)
    damaged = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(TokenDecryptError):
        cipher.decrypt("DEMO1", damaged)
    assert cipher.decrypt("DEMO1", blob) == TOKENS  # the key is still good for the real row
    assert kms.decrypts == 1


def test_the_cache_holds_at_most_its_count_dropping_the_least_recently_used(aws: LocalResources) -> None:
    kms = CountingKms(aws)
    cipher, _ = cached_cipher(aws, kms, max_age_seconds=3600, max_entries=2)
    blobs = {m: cipher.encrypt(m, TOKENS) for m in ("M1", "M2", "M3")}
    cipher.decrypt("M1", blobs["M1"])
    cipher.decrypt("M2", blobs["M2"])
    cipher.decrypt("M1", blobs["M1"])  # M1 used last: M2 is the one to go
    cipher.decrypt("M3", blobs["M3"])
    assert len(cipher.cache) == 2
    assert kms.decrypts == 3
    cipher.decrypt("M1", blobs["M1"])
    assert kms.decrypts == 3
    cipher.decrypt("M2", blobs["M2"])
    assert kms.decrypts == 4


def test_an_age_of_zero_turns_the_cache_off(aws: LocalResources) -> None:
    kms = CountingKms(aws)
    cipher, _ = cached_cipher(aws, kms, max_age_seconds=0)
    blob = cipher.encrypt("DEMO1", TOKENS)
    for _ in range(3):
        cipher.decrypt("DEMO1", blob)
    assert kms.decrypts == 3
    assert len(cipher.cache) == 0


def test_the_cache_never_shows_a_key(aws: LocalResources) -> None:
    _, cipher, _, _ = warm(aws)
    shown = repr(cipher.cache) + str(cipher.cache) + repr(cipher)
    assert shown.count("DEMO1") == 0
    for _, key, _ in cipher.cache._entries.values():
        assert key.hex() not in shown and repr(key) not in shown


def test_the_template_default_is_an_hour_and_the_variable_is_bounded() -> None:
    assert Settings.from_env({"TABLE_NAME": "t", "KMS_KEY_ID": "k"}).data_key_cache_seconds == 3600
    settings = Settings.from_env({"TABLE_NAME": "t", "KMS_KEY_ID": "k", "DATA_KEY_CACHE_SECONDS": "0"})
    assert settings.data_key_cache_seconds == 0
    from ucoauth.base.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="DATA_KEY_CACHE_SECONDS"):
        Settings.from_env({"TABLE_NAME": "t", "KMS_KEY_ID": "k", "DATA_KEY_CACHE_SECONDS": "90000"}).section(
            "tokens"
        )
