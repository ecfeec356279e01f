"""``python -m devstack`` (``make dev``): the whole system on 127.0.0.1 until Ctrl-C.

Ports: gateway 3000, UltraCart sandbox 3001, moto 4566; override with ``DEVSTACK_GATEWAY_PORT``,
``DEVSTACK_SANDBOX_PORT``, ``DEVSTACK_MOTO_PORT``. The refresh planner runs every
``DEVSTACK_SCHEDULE_SECONDS`` (default 15, so a short-lived sandbox token is refreshed quickly).
``ULTRACART_BASE_URL`` + ``ULTRACART_CLIENT_ID`` use that UltraCart instead of the sandbox.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from types import FrameType

from devstack.invoke import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, state_path
from devstack.resources import ROOT
from devstack.stack import LocalStack, StackError

DEFAULT_PORTS = {"DEVSTACK_GATEWAY_PORT": 3000, "DEVSTACK_SANDBOX_PORT": 3001, "DEVSTACK_MOTO_PORT": 4566}
DEFAULT_SCHEDULE_SECONDS = 15.0


def _port(name: str) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return DEFAULT_PORTS[name]
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise StackError(f"{name} must be a port number (0-65535), got {raw!r}")
    return int(raw)


def _schedule_seconds() -> float:
    raw = os.environ.get("DEVSTACK_SCHEDULE_SECONDS", "").strip()
    if not raw:
        return DEFAULT_SCHEDULE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise StackError(f"DEVSTACK_SCHEDULE_SECONDS must be a number of seconds, got {raw!r}") from None
    if value < 1:
        raise StackError("DEVSTACK_SCHEDULE_SECONDS must be at least 1")
    return value


def _python_command() -> str:
    """How to run a devstack module from the repository root, in any shell."""
    try:
        python = os.path.relpath(sys.executable, ROOT)
    except ValueError:
        python = sys.executable
    if python.startswith(".."):
        python = sys.executable
    return f"PYTHONPATH=local {python}"


def banner(stack: LocalStack, schedule_seconds: float) -> str:
    url = stack.gateway_url
    region = stack.resources.region
    python = _python_command()
    if stack.sandbox is not None:
        ultracart = (
            f"  UltraCart sandbox   {stack.sandbox.base_url}  (client id {stack.sandbox.client_id}; "
            f"controls {stack.sandbox.url}/__sandbox/)"
        )
    else:
        client_id = stack.environment["ULTRACART_CLIENT_ID"]
        ultracart = (
            f"  UltraCart           {stack.ultracart_base_url}  (client id {client_id}; register "
            f"{stack.environment['OAUTH_REDIRECT_URI']} as the app's redirect URI)"
        )
    lines = [
        "",
        "Local stack is up (127.0.0.1 only). Ctrl-C stops it.",
        "",
        f"  Open                {url}/install",
        ultracart,
        f"  AWS (moto)          {stack.moto_url}  (table {stack.resources.table_name})",
        "",
        "  Token API (SigV4, local credentials):",
        f'    curl -sS --aws-sigv4 "aws:amz:{region}:execute-api" '
        f'--user "{LOCAL_ACCESS_KEY_ID}:{LOCAL_SECRET_ACCESS_KEY}" {url}/tokens/DEMO1',
        "    make invoke FN=TokenApiFunction EVENT=events/tokens-get.json",
        "  Install linked to one of your app's accounts (an install link; open the URL it prints):",
        "    .venv/bin/ucoauth link acct-42",
        f'    curl -sS --aws-sigv4 "aws:amz:{region}:execute-api" '
        f'--user "{LOCAL_ACCESS_KEY_ID}:{LOCAL_SECRET_ACCESS_KEY}" '
        "-H 'Content-Type: application/json' -d '{\"app_account_id\": \"acct-42\"}' "
        f"{url}/install-sessions",
        "  Install without a redirect (device flow; shows a code to enter on UltraCart's page):",
        "    .venv/bin/ucoauth install --device",
        "  Uninstall webhook (signed with the local secret; --send posts it):",
        f"    {python} -m devstack.sign_webhook DEMO1",
        f"  The refresh planner runs every {schedule_seconds:g} s (DEVSTACK_SCHEDULE_SECONDS).",
        "",
    ]
    return "\n".join(lines)


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    # moto's per-request lines and botocore's credential notes drown the useful ones.
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> int:
    _configure_logging()
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        # A second Ctrl-C while shutting down ends the process at once.
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        schedule_seconds = _schedule_seconds()
        stack = LocalStack(
            gateway_port=_port("DEVSTACK_GATEWAY_PORT"),
            sandbox_port=_port("DEVSTACK_SANDBOX_PORT"),
            moto_port=_port("DEVSTACK_MOTO_PORT"),
            schedule_seconds=schedule_seconds,
        )
        stack.start()
    except StackError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        if "listen" in str(exc):
            print(
                "devstack: choose other ports with "
                "DEVSTACK_GATEWAY_PORT, DEVSTACK_SANDBOX_PORT, DEVSTACK_MOTO_PORT",
                file=sys.stderr,
            )
        return 1
    path = state_path()
    try:
        stack.write_state(path)
        stack.runner.start()
        print(banner(stack, schedule_seconds), file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        print("devstack: stopping...", file=sys.stderr, flush=True)
    finally:
        started = time.monotonic()
        path.unlink(missing_ok=True)
        stack.stop()
        print(f"devstack: stopped in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
