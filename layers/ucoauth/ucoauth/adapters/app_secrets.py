"""The app's own secrets in Secrets Manager, read by version so that rotating one needs no redeploy.

- The UltraCart client secret (:class:`ClientSecret`) is read once and kept while UltraCart
  accepts it. When UltraCart refuses the app, it is read again (one ``GetSecretValue``); a new
  version is used from then on, and the refused call may be sent once more with it.
- The uninstall webhook secret (:func:`webhook_secrets`): the current version and, for
  ``PREVIOUS_WEBHOOK_SECRET_SECONDS`` after it was created, the previous one (staging label
  ``AWSPREVIOUS``), so a sender that still signs with the old secret while it switches over is
  not refused.

No value read here is ever logged; version ids are opaque (not secret) and may be.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ucoauth.base.observability import logger

# How long after a rotation a webhook signed with the previous secret is still accepted.
PREVIOUS_WEBHOOK_SECRET_SECONDS = 24 * 3600
CURRENT = "AWSCURRENT"
PREVIOUS = "AWSPREVIOUS"


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """One version of a secret: its id, its value (out of ``repr``) and when it was created."""

    version_id: str
    value: str = field(repr=False)
    created_at: float | None = None  # epoch seconds


def read_secret(secret_id: str, stage: str = CURRENT) -> SecretVersion:
    """The version of ``secret_id`` that carries the staging label ``stage`` (one GetSecretValue)."""
    from ucoauth.adapters import aws

    answer: Any = aws.secretsmanager().get_secret_value(SecretId=secret_id, VersionStage=stage)
    created = answer.get("CreatedDate")
    if isinstance(created, datetime):
        created_at: float | None = created.timestamp()
    elif isinstance(created, int | float) and not isinstance(created, bool):
        created_at = float(created)
    else:
        created_at = None
    return SecretVersion(str(answer.get("VersionId") or ""), answer["SecretString"], created_at)


class ClientSecret:
    """The UltraCart client secret of one Secrets Manager secret, cached by version.

    Shared by a client and its clones (``UltraCartClient.with_read_timeout``), so a renewal is
    seen by every one of them.
    """

    def __init__(self, secret_id: str, *, read: Callable[[str], SecretVersion] = read_secret) -> None:
        self.secret_id = secret_id
        self._read = read
        self._lock = threading.Lock()
        self._current: SecretVersion | None = None

    def __repr__(self) -> str:
        return f"ClientSecret(secret_id={self.secret_id!r})"

    def current(self) -> SecretVersion:
        """The version in use (read on first use)."""
        with self._lock:
            if self._current is None:
                self._current = self._read(self.secret_id)
            return self._current

    def renew(self, refused_version: str | None) -> bool:
        """UltraCart refused a request sent with ``refused_version``: read the secret again. True
        when another version is in use now (the request may be sent once more with it), False when
        the secret did not change or could not be read (the refusal stands)."""
        with self._lock:
            if self._current is not None and self._current.version_id != refused_version:
                return True  # renewed since that request was sent
            try:
                fresh = self._read(self.secret_id)
            except (ClientError, BotoCoreError) as exc:
                logger.warning("the client secret could not be read again", error=type(exc).__name__)
                return False
            changed = self._current is None or fresh.version_id != self._current.version_id
            self._current = fresh
        if changed:
            logger.info("a new version of the UltraCart client secret is in use", version_id=fresh.version_id)
        return changed


def webhook_secrets(secret_id: str, *, now: float) -> list[str]:
    """The webhook secrets a signature may be made with at ``now``: the current one, then the
    previous one while the current version is younger than ``PREVIOUS_WEBHOOK_SECRET_SECONDS``
    (a sender may still be switching over). One GetSecretValue, two within that window."""
    current = read_secret(secret_id)
    secrets = [current.value]
    recent = current.created_at is not None and now - current.created_at < PREVIOUS_WEBHOOK_SECRET_SECONDS
    if recent:
        try:
            previous = read_secret(secret_id, PREVIOUS)
        except ClientError as exc:
            # No previous version (the secret's first one): nothing more to accept.
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
        else:
            if previous.version_id != current.version_id and previous.value != current.value:
                secrets.append(previous.value)
    return secrets
