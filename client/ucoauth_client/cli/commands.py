"""The commands: each takes the signed admin client, where to print, and its parsed arguments,
and returns the exit code (failures raise ``CliError``)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote

from ucoauth_client.cli.api import EXIT_FAILED, EXIT_OK, EXIT_USAGE, AdminClient, CliError
from ucoauth_client.cli.output import details, stats_text, table

WAIT_SECONDS = 120.0


@dataclass
class Io:
    """Where results (``out``) and progress (``err``) go, JSON or text, and how to ask and wait."""

    out: TextIO
    err: TextIO
    json: bool
    confirm: Callable[[str], bool]
    sleep: Callable[[float], None] = time.sleep

    def progress(self, message: str) -> None:
        print(message, file=self.err, flush=True)

    def emit(self, value: Any, human: Callable[[TextIO], None]) -> None:
        if self.json:
            print(json.dumps(value, indent=2, sort_keys=True), file=self.out)
        else:
            human(self.out)


def _segment(value: str) -> str:
    return quote(value, safe="")


def cmd_list(client: AdminClient, io: Io, args: argparse.Namespace) -> int:
    query: dict[str, str] = {"limit": str(args.page_size)}
    if args.status:
        query["status"] = args.status
    if args.account:
        query["app_account_id"] = args.account
    items: list[dict[str, Any]] = []
    while True:
        page = client.ok("GET", "/installations", query)
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if cursor is None or (args.max is not None and len(items) >= args.max):
            break
        io.progress(f"... {len(items)} installations so far")
        query["cursor"] = cursor
    if args.max is not None:
        items = items[: args.max]
    io.emit({"items": items}, lambda out: table(items, out))
    if not io.json:
        io.progress(f"{len(items)} installation(s)")
    return EXIT_OK


def cmd_show(client: AdminClient, io: Io, args: argparse.Namespace) -> int:
    item = client.ok("GET", f"/installations/{_segment(args.merchant_id)}")
    io.emit(item, lambda out: details(item, out))
    return EXIT_OK


def cmd_refresh(client: AdminClient, io: Io, args: argparse.Namespace) -> int:
    io.progress(f"refreshing {args.merchant_id} at UltraCart ...")
    answer = client.ok("POST", f"/installations/{_segment(args.merchant_id)}/refresh")
    io.emit(answer, lambda out: print(f"{args.merchant_id}: {answer.get('result')}", file=out))
    return EXIT_OK


def cmd_uninstall(client: AdminClient, io: Io, args: argparse.Namespace) -> int:
    if not args.yes and not io.confirm(
        f"Uninstall {args.merchant_id}? Its tokens are revoked at UltraCart and deleted. [y/N] "
    ):
        io.progress("not uninstalled")
        return EXIT_FAILED
    answer = client.ok("POST", f"/installations/{_segment(args.merchant_id)}/uninstall")
    if args.wait:
        io.progress(f"uninstall of {args.merchant_id} queued; waiting for the revoke ...")
        item = _wait_until_uninstalled(client, io, args.merchant_id)
        answer = {**answer, "result": "uninstalled", "revoke_confirmed": item.get("revoke_confirmed")}
    io.emit(answer, lambda out: print(f"{args.merchant_id}: {answer.get('result')}", file=out))
    return EXIT_OK


def _wait_until_uninstalled(client: AdminClient, io: Io, merchant_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        item: dict[str, Any] = client.ok("GET", f"/installations/{_segment(merchant_id)}")
        if item.get("status") == "uninstalled":
            return item
        if time.monotonic() > deadline:
            raise CliError(f"{merchant_id} is still {item.get('status')} after {WAIT_SECONDS:.0f} s")
        io.progress(f"... {item.get('status')}")
        io.sleep(1.0)


def cmd_redrive(client: AdminClient, io: Io, args: argparse.Namespace) -> int:
    total = 0
    while True:
        # Each call moves what it can before its own deadline; repeat until nothing is left.
        moved = int(client.ok("POST", f"/dead-letters/{args.queue}/redrive")["moved"])
        total += moved
        if moved == 0:
            break
        io.progress(f"... {total} moved back to the {args.queue} queue")
    io.emit(
        {"queue": args.queue, "moved": total},
        lambda out: print(f"{total} dead letter(s) moved back to the {args.queue} queue", file=out),
    )
    return EXIT_OK


def cmd_install(client: AdminClient, io: Io, args: argparse.Namespace) -> int:
    """``install --device``: start a device authorization, show its code and address, wait for it."""
    if not args.device:
        raise CliError(
            "only --device installs from here; merchants install in a browser at InstallUrl", EXIT_USAGE
        )
    request = json.dumps({"scope": args.scope}).encode() if args.scope else b""
    started = client.ok("POST", "/device/authorizations", body=request, api_root=True)
    if io.json:
        print(json.dumps(started, sort_keys=True), file=io.out, flush=True)
    else:
        print(f"Open {started['verification_uri_complete']}", file=io.out)
        print(
            f"or open {started['verification_uri']} and enter the code {started['user_code']}",
            file=io.out,
            flush=True,
        )
    status = _wait_for_the_merchant(client, io, started, args.timeout)
    result = {"authorization_id": started["authorization_id"], **status}
    io.emit(result, lambda out: print(_install_outcome(status), file=out))
    return EXIT_OK if status.get("status") == "installed" else EXIT_FAILED


def _wait_for_the_merchant(
    client: AdminClient, io: Io, started: dict[str, Any], timeout: float | None
) -> dict[str, Any]:
    path = f"/device/authorizations/{started['authorization_id']}"
    interval = max(1, int(started.get("interval") or 5))
    waited = 0.0
    while True:
        io.sleep(interval)
        waited += interval
        status: dict[str, Any] = client.ok("GET", path, api_root=True)
        if status.get("status") != "pending":
            return status
        if timeout is not None and waited >= timeout:
            raise CliError("still waiting for the merchant: gave up (--timeout)")
        io.progress("waiting for the merchant to approve...")


def _install_outcome(status: dict[str, Any]) -> str:
    if status.get("status") == "installed":
        return f"{status.get('merchant_id')}: installed"
    if status.get("status") == "denied":
        return "denied: the merchant did not approve"
    return "expired: start again"


def cmd_link(client: AdminClient, io: Io, args: argparse.Namespace) -> int:
    """``link ACCOUNT``: an install link (POST /install-sessions) that links the installation it
    completes to the app's account ``ACCOUNT``."""
    body: dict[str, Any] = {"app_account_id": args.account}
    if args.return_url:
        body["return_url"] = args.return_url
    if args.meta:
        pairs = [item.partition("=") for item in args.meta]
        if any(not sep for _, sep, _ in pairs):
            raise CliError("--meta takes KEY=VALUE", EXIT_USAGE)
        body["metadata"] = {key: value for key, _, value in pairs}
    link = client.ok("POST", "/install-sessions", body=json.dumps(body).encode(), api_root=True)

    def human(out: TextIO) -> None:
        print(link["install_url"], file=out)
        print(f"session {link['session_id']}, for {args.account}, until {link['expires_at']}", file=io.err)

    io.emit(link, human)
    return EXIT_OK


def cmd_stats(client: AdminClient, io: Io, args: argparse.Namespace) -> int:
    stats = client.ok("GET", "/stats")
    io.emit(stats, lambda out: stats_text(stats, out))
    return EXIT_OK


def cmd_watch(client: AdminClient, io: Io, args: argparse.Namespace) -> int:
    shown = 0
    try:
        while args.count is None or shown < args.count:
            stats = client.ok("GET", "/stats")
            if io.json:
                print(json.dumps(stats, sort_keys=True), file=io.out, flush=True)
            else:
                if io.out.isatty():
                    print("\x1b[2J\x1b[H", end="", file=io.out)
                print(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), file=io.out)
                stats_text(stats, io.out)
                print(file=io.out, flush=True)
            shown += 1
            if args.count is None or shown < args.count:
                io.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    return EXIT_OK
