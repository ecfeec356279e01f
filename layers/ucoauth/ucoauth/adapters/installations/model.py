"""A merchant's installation as stored: its statuses, the record of it, and what writes change.

Pure data: the store that reads and writes these is :mod:`ucoauth.adapters.installations.store`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ucoauth.adapters.table import Update, number, string

if TYPE_CHECKING:
    from ucoauth.adapters.browser_items import AccountLink

ACTIVE = "active"
REAUTHORIZATION_REQUIRED = "reauthorization_required"
# Uninstalled by the merchant; the revoke at UltraCart is still being retried (tokens kept only
# for that, the token API answers not_installed).
UNINSTALLING = "uninstalling"
UNINSTALLED = "uninstalled"
HOLD_PREFIX = "hold:"
# How long after a dead holder's lease horizon a recovery message it sent may still arrive: its
# first delivery (no delay) plus the refresh worker's retries of a failing receive.
RECOVERY_GRACE = 900
# Recovery records live one attribute per generation (``recovery_<generation>``), so records of
# several generations sit side by side; ``recovery`` is the single slot items written before.
RECOVERY_PREFIX = "recovery_"
LEGACY_RECOVERY = "recovery"
_RECOVERY_SLOT = re.compile(r"recovery_([1-9][0-9]{0,9})")


def recovery_slot(generation: int) -> str:
    """The attribute that keeps a recovery record of ``generation``."""
    return f"{RECOVERY_PREFIX}{generation}"


@dataclass(frozen=True, slots=True, repr=False)
class Recovery:
    """Tokens UltraCart issued that could not be written to the installation, kept encrypted.

    ``generation`` is the installation they belong to: the next lease holder adopts them when
    it is still the current generation, and revokes them at UltraCart otherwise. ``slot`` is the
    attribute the record was read from (``recovery_<generation>``, or a legacy ``recovery``).
    """

    ciphertext: bytes = field(repr=False)
    generation: int
    issued_at: int
    expires_in: int | None
    token_type: str
    scope: str
    slot: str = field(default="", compare=False)

    @property
    def attribute(self) -> str:
        """Where this record is kept on the item."""
        return self.slot or recovery_slot(self.generation)

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
    def from_attribute(cls, attribute: Any, slot: str = "") -> Recovery | None:
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
            slot=slot,
        )


def recoveries_of(item: dict[str, Any]) -> tuple[Recovery, ...]:
    """Every recovery record on an item, oldest generation first."""
    found = [
        record
        for name, value in item.items()
        if (name == LEGACY_RECOVERY or _RECOVERY_SLOT.fullmatch(name))
        and (record := Recovery.from_attribute(value, name)) is not None
    ]
    return tuple(sorted(found, key=lambda r: (r.generation, r.issued_at)))


# ``<merchant id>:<generation>``: what an uninstall may name (``installation_id``).
INSTALLATION_ID = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63}):([1-9][0-9]{0,9})")


def installation_id(merchant_id: str, generation: int) -> str:
    return f"{merchant_id}:{generation}"


def parse_installation_id(value: object) -> tuple[str, int] | None:
    """(merchant id, generation) of a well-formed installation id, else None."""
    matched = INSTALLATION_ID.fullmatch(value) if isinstance(value, str) else None
    return (matched.group(1), int(matched.group(2))) if matched else None


@dataclass(frozen=True, slots=True, repr=False)
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
    recoveries: tuple[Recovery, ...] = ()
    revoke_confirmed: bool | None = None
    revoke_pending_since: int | None = None
    last_used_at: int | None = None
    # The first read of the lifetime before ``last_used_at``'s, and the expiry of the lifetime
    # ``last_used_at`` belongs to (a read of a lifetime records a use only once: see tokens).
    previous_used_at: int | None = None
    used_until: int | None = None
    # When this installation's flow began (its OAuth state issued, its device authorization
    # created): an uninstall stamped after that (less the clock skew) is for it. None on items
    # written before it was recorded: installed_at stands in.
    began_at: int | None = None
    # Set only on the installation a lease take returns: the horizon and owner of a lease the
    # previous holder never released (it died, ran out of time, or could not write), else None.
    previous_lease_until: int | None = None
    previous_lease_owner: str | None = None
    # Until when a recovery message of a holder that died with the lease may still arrive (the
    # dead-holder evidence): kept on the item, whatever releases the lease, until a token write,
    # a reauthorization, a reinstall or an uninstall settles it.
    awaiting_recovery: int | None = None
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
            recoveries=recoveries_of(item),
            revoke_confirmed=item["revoke_confirmed"]["BOOL"] if "revoke_confirmed" in item else None,
            revoke_pending_since=number(item, "revoke_pending_since"),
            last_used_at=number(item, "last_used_at"),
            previous_used_at=number(item, "previous_used_at"),
            used_until=number(item, "used_until"),
            began_at=number(item, "began_at"),
            awaiting_recovery=number(item, "awaiting_recovery"),
            app_account_id=string(item, "app_account_id"),
            account_metadata={
                k: v["S"] for k, v in item.get("account_metadata", {}).get("M", {}).items() if "S" in v
            },
            install_session_id=string(item, "install_session_id"),
        )

    @property
    def recovery(self) -> Recovery | None:
        """The oldest generation's recovery record, if any (see ``recoveries`` for all)."""
        return self.recoveries[0] if self.recoveries else None

    def recovery_of(self, generation: int) -> Recovery | None:
        """The newest record kept for ``generation``, if any."""
        kept = [r for r in self.recoveries if r.generation == generation]
        return kept[-1] if kept else None

    @property
    def installation_id(self) -> str:
        """The id published in ``Installation Completed``: one generation of one merchant."""
        return installation_id(self.merchant_id, self.generation)

    def lease_held(self, now: float) -> bool:
        """Someone holds an unexpired refresh lease."""
        return self.lease_owner is not None and (self.lease_expires_at or 0) > now


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class TokenFields:
    """What a token write stores besides the ciphertext."""

    ciphertext: bytes = field(repr=False)
    token_type: str
    scope: str
    access_expires_at: int | None
    token_lifetime: int | None
    due_at: int | None
    expiry_assumed: bool = False
    # A read this write serves (an install, an inline refresh): the new lifetime counts as used.
    used_at: int | None = None
    previous_used_at: int | None = None


@dataclass(frozen=True, slots=True, eq=False, repr=False)
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


def linked_elsewhere(item: dict[str, Any] | None, link: AccountLink) -> bool:
    """Whether an installed merchant's item links another account than ``link``'s."""
    if item is None or string(item, "status") == UNINSTALLED:
        return False
    linked = string(item, "app_account_id")
    return linked is not None and linked != link.app_account_id


def relinked(installation: Installation, old: dict[str, Any], link: AccountLink | None) -> Installation:
    """The installation an install wrote, saying which account it was linked to before (``old``)
    when this install linked it to another."""
    before = string(old, "app_account_id")
    if link is None or before is None or before == link.app_account_id:
        return installation
    return dataclasses.replace(installation, relinked_from=before)
