"""What the command line prints for people: installations as a table or as lines, the stats."""

from __future__ import annotations

import json
from typing import Any, TextIO

COLUMNS = (
    ("merchant_id", "MERCHANT"),
    ("status", "STATUS"),
    ("generation", "GEN"),
    ("installed_at", "INSTALLED"),
    ("access_expires_at", "EXPIRES"),
    ("next_refresh_at", "NEXT REFRESH"),
    ("last_refreshed_at", "LAST REFRESH"),
    ("revoke_confirmed", "REVOKED"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict) and "code" in value:  # last_error
        return f"{value['code']} at {_cell(value.get('at'))}"
    text = str(value)
    # ISO times: minutes are enough in a table.
    if len(text) == 20 and text.endswith("Z") and text[10] == "T":
        return text[:16].replace("T", " ")
    return text


def table(rows: list[dict[str, Any]], out: TextIO) -> None:
    """Installations as an aligned text table."""
    cells = [[_cell(row.get(key)) for key, _ in COLUMNS] for row in rows]
    widths = [max([len(title)] + [len(r[i]) for r in cells]) for i, (_, title) in enumerate(COLUMNS)]
    print("  ".join(title.ljust(w) for (_, title), w in zip(COLUMNS, widths, strict=True)).rstrip(), file=out)
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def details(item: dict[str, Any], out: TextIO) -> None:
    """One installation as ``name: value`` lines."""
    width = max(len(k) for k in item)
    for key, value in item.items():
        print(
            f"{key.ljust(width)}  {_cell(value) if not isinstance(value, dict) else json.dumps(value)}",
            file=out,
        )


def stats_text(stats: dict[str, Any], out: TextIO) -> None:
    """The stats as a few readable lines."""
    per_status = stats.get("installations", {})
    print("installations  " + "  ".join(f"{k} {v}" for k, v in per_status.items()), file=out)
    print(f"due within 1h  {stats.get('due_within_hour')}", file=out)
    budget = stats.get("ultracart_budget", {})
    print(f"ultracart scope {budget.get('scope')}", file=out)
    for window in ("hour", "day"):
        used = budget.get(window, {})
        print(
            f"ultracart {window:<4} {used.get('used')} used of {used.get('limit')} "
            f"(background {used.get('background_limit')})",
            file=out,
        )
    for name, queue in stats.get("queues", {}).items():
        age = queue.get("oldest_age_seconds")
        print(
            f"{name + ' queue':<14} {queue.get('depth')} waiting, {queue.get('in_flight')} in flight, "
            f"{queue.get('delayed')} delayed" + (f", oldest {age} s" if age is not None else ""),
            file=out,
        )
    dead = stats.get("dead_letters", {})
    print("dead letters   " + "  ".join(f"{k} {v}" for k, v in dead.items()), file=out)
