"""The installations table's keys and its attribute codec, shared by every store of the table.

One table holds several kinds of item (docs/ARCHITECTURE.md lists them): each kind has its store
module in ``ucoauth.adapters`` (``installations``, ``browser_items``, ``devices``, ``pace``,
``budget``, ``shards``), and they share what is here. The low-level client is used so each
call is exactly one request and nothing is hidden.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

DUE_INDEX = "DueIndex"
STATUS_INDEX = "StatusIndex"
ACCOUNT_INDEX = "AccountIndex"
INSTALLATION_SK = "INSTALLATION"


def merchant_key(merchant_id: str) -> dict[str, Any]:
    """Primary key of a merchant's installation item."""
    return {"pk": {"S": f"MERCHANT#{merchant_id}"}, "sk": {"S": INSTALLATION_SK}}


def digest(value: str) -> str:
    """SHA-256 hex of a secret: what the table stores instead of the secret."""
    return hashlib.sha256(value.encode()).hexdigest()


def due_shard(merchant_id: str, shards: int) -> str:
    """Stable write shard of ``DueIndex`` for a merchant."""
    return str(int(hashlib.blake2b(merchant_id.encode(), digest_size=4).hexdigest(), 16) % shards)


def is_conditional_failure(exc: ClientError) -> bool:
    """The write lost its condition (someone else wrote first)."""
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def if_condition_holds(write: Callable[[], Any]) -> Any | None:
    """Run a conditional write; None when its condition failed (someone else got there first)."""
    try:
        return write()
    except ClientError as exc:
        if is_conditional_failure(exc):
            return None
        raise


def number(item: dict[str, Any], name: str) -> int | None:
    """A number attribute of a low-level item, or None."""
    value = item.get(name)
    return int(value["N"]) if value and "N" in value else None


def string(item: dict[str, Any], name: str) -> str | None:
    """A string attribute of a low-level item, or None."""
    value = item.get(name)
    return value["S"] if value and "S" in value else None


class Update:
    """One UpdateItem, built from attribute values rather than expression strings, so the item
    it leaves can be computed from the item before it (a write answering ``ALL_OLD``).

    ``assign`` sets attributes to values; ``increment`` adds one to a counter (starting from 0);
    ``remove`` drops attributes. ``name``/``value`` add the placeholders a condition uses.
    """

    def __init__(self) -> None:
        self.assigned: dict[str, Any] = {}
        self.incremented: list[str] = []
        self.added: dict[str, Any] = {}
        self.removed: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def assign(self, **attributes: Any) -> Update:
        for name, value in attributes.items():
            self.removed = [r for r in self.removed if r != name]
            self.assigned[name] = value
        return self

    def increment(self, *counters: str) -> Update:
        self.incremented += counters
        return self

    def add_to_set(self, attribute: str, value: Any) -> Update:
        """``ADD``: the members of a string set (``{"SS": [...]}``) joined to the attribute's."""
        self.added[attribute] = value
        return self

    def remove(self, *attributes: str) -> Update:
        self.removed += [a for a in attributes if a not in self.assigned]
        return self

    def name(self, placeholder: str, attribute: str) -> Update:
        self.names[placeholder] = attribute
        return self

    def value(self, placeholder: str, value: Any) -> Update:
        self.values[placeholder] = value
        return self

    def request(self) -> dict[str, Any]:
        """``UpdateExpression`` with its names and values (every attribute by a placeholder)."""
        names = dict(self.names)
        values = dict(self.values)
        sets: list[str] = []
        for index, (attribute, value) in enumerate(self.assigned.items()):
            names[f"#a{index}"], values[f":a{index}"] = attribute, value
            sets.append(f"#a{index} = :a{index}")
        if self.incremented:
            values[":u0"], values[":u1"] = {"N": "0"}, {"N": "1"}
        for index, counter in enumerate(self.incremented):
            names[f"#c{index}"] = counter
            sets.append(f"#c{index} = if_not_exists(#c{index}, :u0) + :u1")
        removes = []
        for index, attribute in enumerate(self.removed):
            names[f"#r{index}"] = attribute
            removes.append(f"#r{index}")
        adds = []
        for index, (attribute, value) in enumerate(self.added.items()):
            names[f"#d{index}"], values[f":d{index}"] = attribute, value
            adds.append(f"#d{index} :d{index}")
        expression = f"SET {', '.join(sets)}" + (f" REMOVE {', '.join(removes)}" if removes else "")
        expression += f" ADD {', '.join(adds)}" if adds else ""
        return {
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def applied_to(self, old: dict[str, Any]) -> dict[str, Any]:
        """The item this update leaves when applied to ``old``."""
        item = {k: v for k, v in old.items() if k not in self.removed}
        item.update(self.assigned)
        for counter in self.incremented:
            item[counter] = {"N": str((number(old, counter) or 0) + 1)}
        for attribute, value in self.added.items():
            members = set(old.get(attribute, {}).get("SS", [])) | set(value["SS"])
            item[attribute] = {"SS": sorted(members)}
        return item
