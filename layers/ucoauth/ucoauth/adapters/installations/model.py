"""A merchant's installation as stored: its statuses, the record of it, and what writes change.

Pure data: the store that reads and writes these is :mod:`ucoauth.adapters.installations.store`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ucoauth.adapters.table import Update, number, string

if TYPE_CHECKING:
    from ucoauth.usecases.install_sessions import AccountLink

ACTIVE = "active"
REAUTHORIZATION_REQUIRED = "reauthorization_required"
# Uninstalled by the merchant; the revoke at UltraCart is still being retried (tokens kept only
# for that, the token API answers not_installed).
UNINSTALLING = "uninstalling"
UNINSTALLED = "uninstalled"
HOLD_PREFIX = "hold:"


@dataclass(frozen=True, slots=True)
class Recovery:
    """Tokens UltraCart issued that could not be written to the installation, kept encrypted.

    ``generation`` is the installation they belong to: the next lease holder adopts them when
    it is still the current generation, and revokes them at UltraCart otherwise.
    """

    ciphertext: bytes = field(repr=False)
    generation: int
    issued_at: int
    expires_in: int | None
    token_type: str
    scope: str

    def as_attribute(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "tokens": {"B": self.ciphertext},
            "generation": {"N": str(self.generation)},
            "issued_at": {"N": str(self.issued_at)},
            "token_type": {"S": self.token_type},
            "scope": {"S": self.scope},
        }
        if self.expires_in is not None:
            value["expires_in"] = {"N": str(self.expires_in)}
        return {"M": value}

    @classmethod
    def from_attribute(cls, attribute: Any) -> Recovery | None:
        if not attribute or "M" not in attribute:
            return None
        value = attribute["M"]
        return cls(
            ciphertext=bytes(value["tokens"]["B"]),
            generation=number(value, "generation") or 0,
            issued_at=number(value, "issued_at") or 0,
            expires_in=number(value, "expires_in"),
            token_type=string(value, "token_type") or "bearer",
            scope=string(value, "scope") or "",
        )


# ``<merchant id>:<generation>``: what an uninstall may name (``installation_id``).
INSTALLATION_ID = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63}):([1-9][0-9]{0,9})")


def installation_id(merchant_id: str, generation: int) -> str:
    return f"{merchant_id}:{generation}"


def parse_installation_id(value: object) -> tuple[str, int] | None:
    """(merchant id, generation) of a well-formed installation id, else None."""
    matched = INSTALLATION_ID.fullmatch(value) if isinstance(value, str) else None
    return (matched.group(1), int(matched.group(2))) if matched else None


@dataclass(frozen=True, slots=True)
class Installation:
    """A merchant's installation as stored (the tokens stay encrypted)."""

    merchant_id: str
    status: str
    generation: int
    version: int
    installed_at: int
    tokens_ciphertext: bytes | None = field(repr=False)
    token_type: str
    scope: str
    access_expires_at: int | None
    token_lifetime: int | None
    due_at: int | None
    lease_owner: str | None
    lease_expires_at: int | None
    refreshed_at: int | None
    uninstalled_at: int | None
    uninstall_reason: str | None
    expiry_assumed: bool = False
    pending_event: str | None = None
    recovery: Recovery | None = None
    revoke_confirmed: bool | None = None
    revoke_pending_since: int | None = None
    last_used_at: int | None = None
    # When this installation's flow began (its OAuth state issued, its device authorization
    # created): an uninstall stamped after that (less the clock skew) is for it. None on items
    # written before it was recorded: installed_at stands in.
    began_at: int | None = None
    # Set only on the installation a lease take returns: the horizon and owner of a lease the
    # previous holder never released (it died, ran out of time, or could not write), else None.
    previous_lease_until: int | None = None
    previous_lease_owner: str | None = None
    # The app's own account the installation is linked to (an install session), with its
    # metadata and the session's non-secret id; None when installed without a session.
    app_account_id: str | None = None
    account_metadata: dict[str, str] = field(default_factory=dict)
    install_session_id: str | None = None
    # Set only on the installation an install write returns: the account it was linked to before
    # this write linked it to another one.
    relinked_from: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Installation:
        """Build from a DynamoDB item (low-level attribute values)."""
        blob = item.get("tokens")
        return cls(
            merchant_id=string(item, "merchant_id") or "",
            status=string(item, "status") or ACTIVE,
            generation=number(item, "generation") or 0,
            version=number(item, "version") or 0,
            installed_at=number(item, "installed_at") or 0,
            tokens_ciphertext=bytes(blob["B"]) if blob else None,
            token_type=string(item, "token_type") or "bearer",
            scope=string(item, "scope") or "",
            access_expires_at=number(item, "access_expires_at"),
            token_lifetime=number(item, "token_lifetime"),
            due_at=number(item, "due_at"),
            lease_owner=string(item, "lease_owner"),
            lease_expires_at=number(item, "lease_expires_at"),
            refreshed_at=number(item, "refreshed_at"),
            uninstalled_at=number(item, "uninstalled_at"),
            uninstall_reason=string(item, "uninstall_reason"),
            expiry_assumed=bool(item.get("expiry_assumed", {}).get("BOOL", False)),
            pending_event=string(item, "pending_event"),
            recovery=Recovery.from_attribute(item.get("recovery")),
            revoke_confirmed=item["revoke_confirmed"]["BOOL"] if "revoke_confirmed" in item else None,
            revoke_pending_since=number(item, "revoke_pending_since"),
            last_used_at=number(item, "last_used_at"),
            began_at=number(item, "began_at"),
            app_account_id=string(item, "app_account_id"),
            account_metadata={
                k: v["S"] for k, v in item.get("account_metadata", {}).get("M", {}).items() if "S" in v
            },
            install_session_id=string(item, "install_session_id"),
        )

    @property
    def installation_id(self) -> str:
        """The id published in ``Installation Completed``: one generation of one merchant."""
        return installation_id(self.merchant_id, self.generation)

    def lease_held(self, now: float) -> bool:
        """Someone holds an unexpired refresh lease."""
        return self.lease_owner is not None and (self.lease_expires_at or 0) > now


@dataclass(frozen=True, slots=True)
class TokenFields:
    """What a token write stores besides the ciphertext."""

    ciphertext: bytes = field(repr=False)
    token_type: str
    scope: str
    access_expires_at: int | None
    token_lifetime: int | None
    due_at: int | None
    expiry_assumed: bool = False


@dataclass(frozen=True, slots=True)
class Replaced:
    """Tokens a reinstall took off the item: a grant still live at UltraCart until revoked."""

    ciphertext: bytes = field(repr=False)
    generation: int
    status: str

    @classmethod
    def of(cls, old: dict[str, Any]) -> Replaced | None:
        blob = old.get("tokens")
        if not blob:
            return None
        return cls(bytes(blob["B"]), number(old, "generation") or 0, string(old, "status") or ACTIVE)


def link_account(update: Update, link: AccountLink, *, refuse_relink: bool) -> list[str]:
    """Link the installation to the session's account in the install's own write; the condition
    that keeps another account's link when relinking is refused."""
    update.assign(
        app_account_id={"S": link.app_account_id},
        account_metadata={"M": {k: {"S": v} for k, v in link.metadata.items()}},
    )
    if link.session_id:  # a device authorization links an account without a session
        update.assign(install_session_id={"S": link.session_id})
    else:
        update.remove("install_session_id")
    if not refuse_relink:
        return []
    update.name("#st", "status").value(":acct", {"S": link.app_account_id}).value(":gone", {"S": UNINSTALLED})
    return ["(attribute_not_exists(app_account_id) OR app_account_id = :acct OR #st = :gone)"]
