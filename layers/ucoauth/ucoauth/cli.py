"""``ucoauth``: the operators' command line over the admin API (``/admin/*``, SigV4-signed).

It finds the API from ``--url``, from ``--stack NAME`` (the stack's ``AdminApiUrl`` output), or,
with neither, from the running local stack's ``.devstack/state.json`` (``make dev``), which it
signs with the local stack's fake credentials. Exit codes: 0 done, 1 failed, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO
from urllib.parse import quote, urlencode, urlsplit

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STATE_ENV = "DEVSTACK_STATE"
LOCAL_CREDENTIALS = ("testing", "testing")
STATUSES = ("active", "reauthorization_required", "uninstalling", "uninstalled")
TIMEOUT = 35.0  # the admin function's own Timeout is 29 s
WAIT_SECONDS = 120.0


class CliError(Exception):
    """A failure the user sees as one line; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Endpoint:
    """Where the admin API is, and how to sign for it."""

    base_url: str  # ends with /admin
    region: str
    local: bool


# -- finding the API -----------------------------------------------------------------------------


def _find_state_file() -> Path | None:
    override = os.environ.get(STATE_ENV)
    if override:
        return Path(override)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder / ".devstack" / "state.json"
        if candidate.is_file():
            return candidate
    return None


def _local_endpoint() -> Endpoint:
    path = _find_state_file()
    if path is None or not path.is_file():
        raise CliError(
            "no API given and no local stack found: pass --stack NAME or --url URL, or start `make dev`",
            EXIT_USAGE,
        )
    state = json.loads(path.read_text(encoding="utf-8"))
    pid = state.get("pid")
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise CliError(f"the local stack that wrote {path} is not running: start `make dev`") from None
        except PermissionError:
            pass
    return Endpoint(f"{state['gateway_url'].rstrip('/')}/admin", state.get("region", "us-east-1"), True)


def _stack_endpoint(stack: str, region: str | None) -> Endpoint:
    import botocore.session
    from botocore.exceptions import BotoCoreError, ClientError

    session = botocore.session.get_session()
    client: Any = session.create_client("cloudformation", region_name=region)
    try:
        stacks = client.describe_stacks(StackName=stack)["Stacks"]
    except (ClientError, BotoCoreError) as exc:
        raise CliError(f"cannot read the stack {stack}: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    url = outputs.get("AdminApiUrl") or (outputs["ApiUrl"] + "/admin" if "ApiUrl" in outputs else None)
    if not url:
        raise CliError(f"the stack {stack} has no AdminApiUrl output (deploy this version first)")
    return Endpoint(url.rstrip("/"), client.meta.region_name, False)


def _url_endpoint(url: str, region: str | None) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"--url must be an http(s) URL, not {url!r}", EXIT_USAGE)
    base = url.rstrip("/")
    if not base.endswith("/admin"):
        base += "/admin"
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if region is None:
        host = parts.hostname or ""
        # https://{api}.execute-api.{region}.amazonaws.com
        labels = host.split(".")
        region = labels[2] if len(labels) > 3 and labels[1] == "execute-api" else "us-east-1"
    return Endpoint(base, region, local)


def find_endpoint(args: argparse.Namespace) -> Endpoint:
    """``--url``, ``--stack`` or the local stack, in that order."""
    if args.url:
        return _url_endpoint(args.url, args.region)
    if args.stack:
        return _stack_endpoint(args.stack, args.region)
    return _local_endpoint()


# -- the signed client ---------------------------------------------------------------------------


class AdminClient:
    """Signs each request with SigV4 (service ``execute-api``) and returns (status, JSON body)."""

    def __init__(self, endpoint: Endpoint) -> None:
        from botocore.credentials import Credentials

        self.endpoint = endpoint
        if endpoint.local:
            self.credentials = Credentials(*LOCAL_CREDENTIALS)
        else:
            import botocore.session

            found = botocore.session.get_session().get_credentials()
            if found is None:
                raise CliError("no AWS credentials: configure them (aws configure, AWS_PROFILE, sso login)")
            self.credentials = found

    def call(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        *,
        body: bytes = b"",
        api_root: bool = False,
    ) -> tuple[int, Any, dict[str, str]]:
        """``path`` under the admin API, or with ``api_root`` under the API itself (``/device/...``)."""
        import requests
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        base = self.endpoint.base_url.removesuffix("/admin") if api_root else self.endpoint.base_url
        url = base + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(self.credentials.get_frozen_credentials(), "execute-api", self.endpoint.region).add_auth(
            request
        )
        try:
            response = requests.request(
                method, url, headers=dict(request.headers.items()), data=body, timeout=TIMEOUT
            )
        except requests.RequestException as exc:
            raise CliError(f"cannot reach {self.endpoint.base_url}: {type(exc).__name__}") from None
        answer: Any
        try:
            answer = response.json()
        except ValueError:
            answer = {"error": f"http_{response.status_code}"}
        return response.status_code, answer, dict(response.headers)

    def ok(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        *,
        body: bytes = b"",
        api_root: bool = False,
    ) -> Any:
        """The body of a 2xx answer; anything else raises CliError (400 is a usage error)."""
        status, answer, headers = self.call(method, path, query, body=body, api_root=api_root)
        if 200 <= status < 300:
            return answer
        error = answer.get("error") or answer.get("message") if isinstance(answer, dict) else None
        detail = f"{status} {error or 'error'}"
        if "Retry-After" in headers:
            detail += f" (retry after {headers['Retry-After']} s)"
        raise CliError(detail, EXIT_USAGE if status == 400 else EXIT_FAILED)


# -- output --------------------------------------------------------------------------------------

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


# -- commands ------------------------------------------------------------------------------------


@dataclass
class Io:
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
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            item = client.ok("GET", f"/installations/{_segment(args.merchant_id)}")
            if item.get("status") == "uninstalled":
                answer = {**answer, "result": "uninstalled", "revoke_confirmed": item.get("revoke_confirmed")}
                break
            if time.monotonic() > deadline:
                raise CliError(f"{args.merchant_id} is still {item.get('status')} after {WAIT_SECONDS:.0f} s")
            io.progress(f"... {item.get('status')}")
            io.sleep(1.0)
    io.emit(answer, lambda out: print(f"{args.merchant_id}: {answer.get('result')}", file=out))
    return EXIT_OK


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
    path = f"/device/authorizations/{started['authorization_id']}"
    interval = max(1, int(started.get("interval") or 5))
    waited = 0.0
    while True:
        io.sleep(interval)
        waited += interval
        status = client.ok("GET", path, api_root=True)
        if status.get("status") != "pending":
            break
        if args.timeout is not None and waited >= args.timeout:
            raise CliError("still waiting for the merchant: gave up (--timeout)")
        io.progress("waiting for the merchant to approve...")
    result = {"authorization_id": started["authorization_id"], **status}
    io.emit(result, lambda out: print(_install_outcome(status), file=out))
    return 0 if status.get("status") == "installed" else EXIT_FAILED


def _install_outcome(status: dict[str, Any]) -> str:
    if status.get("status") == "installed":
        return f"{status.get('merchant_id')}: installed"
    if status.get("status") == "denied":
        return "denied: the merchant did not approve"
    return "expired: start again"


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


# -- parsing -------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"ucoauth: error: {message}\n")


def _common_options(default: Any) -> _Parser:
    # Accepted before and after the command; a subcommand's copy must not reset what was given
    # before it, hence SUPPRESS there.
    common = _Parser(add_help=False)
    common.add_argument("--stack", default=default, help="CloudFormation stack name: its AdminApiUrl output")
    common.add_argument("--url", default=default, help="the API's base URL (ApiUrl, or ApiUrl/admin)")
    common.add_argument("--region", default=default, help="AWS region (default: your AWS configuration)")
    common.add_argument(
        "--json", action="store_true", default=False if default is None else default, help="JSON output"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The command line's grammar."""
    top, common = _common_options(None), _common_options(argparse.SUPPRESS)

    parser = _Parser(
        prog="ucoauth",
        description="Operate UltraCart OAuth installations through the stack's admin API.",
        parents=[top],
        epilog="Exit codes: 0 done, 1 failed, 2 usage. Without --stack or --url: the `make dev` stack.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    installations = commands.add_parser("installations", help="list or show installations", parents=[common])
    which = installations.add_subparsers(dest="action", required=True, parser_class=_Parser)
    listing = which.add_parser("list", help="installations (all pages)", parents=[common])
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--max", type=int, help="stop after this many")
    listing.add_argument("--page-size", type=int, default=50, choices=range(1, 101), metavar="1-100")
    listing.set_defaults(run=cmd_list)
    show = which.add_parser("show", help="one installation", parents=[common])
    show.add_argument("merchant_id")
    show.set_defaults(run=cmd_show)

    refresh = commands.add_parser("refresh", help="refresh a merchant's tokens now", parents=[common])
    refresh.add_argument("merchant_id")
    refresh.set_defaults(run=cmd_refresh)

    uninstall = commands.add_parser(
        "uninstall", help="revoke and delete a merchant's tokens", parents=[common]
    )
    uninstall.add_argument("merchant_id")
    uninstall.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    uninstall.add_argument("--wait", action="store_true", help="wait until the revoke is done")
    uninstall.set_defaults(run=cmd_uninstall)

    dead = commands.add_parser("dead-letters", help="dead-letter queues", parents=[common])
    dead_actions = dead.add_subparsers(dest="action", required=True, parser_class=_Parser)
    redrive = dead_actions.add_parser(
        "redrive", help="move dead letters back to their queue", parents=[common]
    )
    redrive.add_argument("queue", choices=("refresh", "revoke"))
    redrive.set_defaults(run=cmd_redrive)

    installing = commands.add_parser(
        "install",
        help="install without a browser redirect: --device shows a code and waits",
        parents=[common],
    )
    installing.add_argument("--device", action="store_true", help="UltraCart's device flow (RFC 8628)")
    installing.add_argument(
        "--scope", help="the UltraCart scope to ask for (default: the stack's DeviceScope)"
    )
    installing.add_argument("--timeout", type=float, help="give up after this many seconds")
    installing.set_defaults(run=cmd_install)

    stats = commands.add_parser("stats", help="installations, budget, queues", parents=[common])
    stats.set_defaults(run=cmd_stats)

    watch = commands.add_parser("watch", help="a live view of the stats (Ctrl-C stops)", parents=[common])
    watch.add_argument("--interval", type=float, default=5.0)
    watch.add_argument("--count", type=int, help="stop after this many views")
    watch.set_defaults(run=cmd_watch)
    return parser


def _ask(prompt: str) -> bool:
    if not sys.stdin.isatty():
        raise CliError("refusing to uninstall without a terminal to confirm: add --yes", EXIT_USAGE)
    return input(prompt).strip().lower() in ("y", "yes")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ucoauth`` console script."""
    args = build_parser().parse_args(argv)
    io = Io(out=sys.stdout, err=sys.stderr, json=args.json, confirm=_ask)
    try:
        client = AdminClient(find_endpoint(args))
        code: int = args.run(client, io, args)
    except CliError as exc:
        print(f"ucoauth: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    sys.exit(main())
