"""Sign an uninstall webhook for the running local stack: ``python -m devstack.sign_webhook DEMO1``.

Prints a ready ``curl`` command: the Standard Webhooks body, ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` made with the ``standardwebhooks`` library and
the secret read from the local Secrets Manager (the one the template created). ``--send`` posts
it instead. The signature is valid for 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from standardwebhooks.webhooks import Webhook

from devstack.invoke import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, StackNotRunningError, load_state

WEBHOOK_PATH = "/webhooks/uninstall"


@dataclass(frozen=True)
class SignedWebhook:
    """A signed uninstall webhook: send ``body`` with ``headers``."""

    webhook_id: str
    headers: dict[str, str]
    body: str


def sign_uninstall(
    secret: str,
    merchant_id: str,
    *,
    now: datetime | None = None,
    webhook_id: str | None = None,
    uninstalled_at: datetime | None = None,
) -> SignedWebhook:
    """An ``app.uninstalled`` webhook for ``merchant_id``, signed with the Standard Webhooks secret."""
    now = now or datetime.now(UTC)
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    when = (uninstalled_at or now).astimezone(UTC)
    body = json.dumps(
        {
            "type": "app.uninstalled",
            "timestamp": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "data": {"merchant_id": merchant_id},
        },
        separators=(",", ":"),
    )
    signature = Webhook(secret).sign(webhook_id, now, body)
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    return SignedWebhook(webhook_id=webhook_id, headers=headers, body=body)


def curl_command(url: str, webhook: SignedWebhook) -> str:
    """The webhook as one shell-quoted ``curl`` command line."""
    parts = ["curl", "-sS", "-i", "-X", "POST", url]
    for name, value in webhook.headers.items():
        parts += ["-H", f"{name}: {value}"]
    parts += ["--data-raw", webhook.body]
    return shlex.join(parts)


def read_secret(state: dict[str, Any]) -> str:
    """The webhook secret, from the running stack's (local) Secrets Manager."""
    # The stack's harness credentials (the local AWS enforces IAM); the fake ones for an older state file.
    harness = state.get("credentials", {}).get("harness") or {
        "access_key": LOCAL_ACCESS_KEY_ID,
        "secret_key": LOCAL_SECRET_ACCESS_KEY,
    }
    client = boto3.Session(
        aws_access_key_id=harness["access_key"],
        aws_secret_access_key=harness["secret_key"],
        aws_session_token=harness.get("token"),
        region_name=state["region"],
    ).client("secretsmanager", endpoint_url=state["moto_url"])
    return client.get_secret_value(SecretId=state["webhook_secret_arn"])["SecretString"]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.sign_webhook",
        description="Print (or --send) a signed uninstall webhook for the running local stack.",
    )
    parser.add_argument("merchant_id", help="the merchant whose installation to remove, e.g. DEMO1")
    parser.add_argument("--send", action="store_true", help="post it now and print the answer")
    parser.add_argument("--state", type=Path, default=None, help="state file (default .devstack/state.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        state = load_state(args.state)
    except StackNotRunningError as exc:
        print(f"devstack.sign_webhook: {exc}", file=sys.stderr)
        return 2
    webhook = sign_uninstall(read_secret(state), args.merchant_id)
    url = f"{state['gateway_url']}{WEBHOOK_PATH}"
    if not args.send:
        print(curl_command(url, webhook))
        return 0
    request = urllib.request.Request(  # noqa: S310 - the running stack's own http URL
        url, data=webhook.body.encode(), headers=webhook.headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own http URL
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    print(f"{status} {text}")
    return 0 if status < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
