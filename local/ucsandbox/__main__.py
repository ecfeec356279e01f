"""Run the sandbox alone: `python -m ucsandbox --port 3001 [--host 127.0.0.1] [--client-id ...]`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from ucsandbox.models import DEFAULT_CLIENT_ID, Settings
from ucsandbox.sandbox import Sandbox


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ucsandbox", description="Local fake of UltraCart's OAuth API."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=3001, help="port to bind, 0 for any free port (default 3001)"
    )
    parser.add_argument(
        "--client-id", default=DEFAULT_CLIENT_ID, help="the one registered application's client_id"
    )
    parser.add_argument(
        "--client-secret",
        default=None,
        help="require this client_secret on token and revoke calls (default: none)",
    )
    parser.add_argument(
        "--rotate", choices=("on", "off", "omit"), default="on", help="refresh-token rotation (default on)"
    )
    parser.add_argument(
        "--concurrency-scope",
        choices=("merchant", "application", "none"),
        default="merchant",
        help="answer 429 to concurrent calls for the same merchant/application (default merchant)",
    )
    parser.add_argument("--latency-ms", type=int, default=0, help="delay added to every API call")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    rotate = {"on": True, "off": False, "omit": "omit"}[args.rotate]
    sandbox = Sandbox(args.host, args.port, client_id=args.client_id, client_secret=args.client_secret)
    # Validate before binding so a bad flag fails without a half-started server.
    sandbox.apply_settings(
        Settings()
        .updated(
            {
                "rotate": rotate,
                "concurrency_scope": None if args.concurrency_scope == "none" else args.concurrency_scope,
                "latency_ms": args.latency_ms,
            }
        )
        .to_json()
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with sandbox:
        # Tools that start the sandbox read this line to learn the port (with --port 0).
        print(f"UltraCart sandbox listening on {sandbox.url}", file=sys.stderr, flush=True)
        print(f"  base URL   {sandbox.base_url}", file=sys.stderr, flush=True)
        print(f"  client id  {sandbox.client_id}", file=sys.stderr, flush=True)
        print(f"  controls   {sandbox.url}/__sandbox/", file=sys.stderr, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
