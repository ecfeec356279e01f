"""Regenerate the events that cannot stay valid in a file: ``python -m devstack.events`` (``make events``).

Against the running local stack (``make dev``), it rewrites:

- ``events/callback-success.json``: a live state, its cookie nonce and a sandbox code for DEMO1
  (valid for the state's lifetime, 10 minutes, and once);
- ``events/webhook-uninstall.json``: an uninstall of DEMO1 signed with the stack's secret (valid
  for 5 minutes);
- ``events/env.json``: each function's environment for ``sam local invoke --env-vars``, pointing
  at the local stack's moto from inside Docker (``host.docker.internal``).

Every other file of ``events/`` holds static, realistic values and is invokable as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devstack.invoke import (
    StackNotRunningError,
    apply_environment,
    aws_environment,
    fill_event,
    load_state,
    template_invoker,
)
from devstack.resources import DEFAULT_REGION

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
MERCHANT = "DEMO1"
DOCKER_HOST = "host.docker.internal"

# Which function each event file is for, by its name's prefix (the longest prefix wins).
EVENT_FUNCTIONS = {
    "install": "OAuthBrowserFunction",
    "install-sessions-": "TokenApiFunction",
    "installed": "OAuthBrowserFunction",
    "callback-": "OAuthBrowserFunction",
    "unknown-path": "OAuthBrowserFunction",
    "tokens-": "TokenApiFunction",
    "webhook-": "UninstallWebhookFunction",
    "schedule-refresh": "RefreshPlannerFunction",
    "sqs-refresh": "RefreshWorkerFunction",
    "sqs-revoke-": "RevokeWorkerFunction",
    "admin-": "AdminApiFunction",
    "device-": "DeviceFlowFunction",
    "sqs-device-": "DeviceWorkerFunction",
}


def function_for(event_file: str) -> str:
    """The logical id of the function an ``events/`` file is for."""
    stem = Path(event_file).stem
    prefixes = [prefix for prefix in EVENT_FUNCTIONS if stem.startswith(prefix)]
    if not prefixes:
        raise KeyError(f"no function takes {event_file}")
    return EVENT_FUNCTIONS[max(prefixes, key=len)]


def env_json(environments: Mapping[str, Mapping[str, str]], endpoint_url: str) -> dict[str, dict[str, str]]:
    """``sam local invoke --env-vars`` content: per function, its variables plus the endpoint."""
    return {
        logical_id: {**dict(sorted(environment.items())), "AWS_ENDPOINT_URL": endpoint_url}
        for logical_id, environment in sorted(environments.items())
    }


def for_docker(url: str) -> str:
    """A loopback URL as a Lambda container sees it (the host, not the container's own loopback)."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        return url
    return parts._replace(netloc=f"{DOCKER_HOST}:{parts.port}" if parts.port else DOCKER_HOST).geturl()


def _write(out: Path, name: str, content: Any) -> None:
    (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out / name}")


def regenerate(state: dict[str, Any], out: Path = EVENTS) -> None:
    """Rewrite the live events (into ``out``, default ``events/``) against the running stack
    described by ``state``; the other files are read from ``events/``."""
    from devstack.resources import load_template
    from devstack.sign_webhook import read_secret, sign_uninstall
    from ucsandbox import SandboxControl

    template = load_template()
    environment: dict[str, str] = dict(state["environment"])
    harness = state.get("credentials", {}).get("harness")
    apply_environment({**environment, **aws_environment(state["moto_url"], state["region"], harness)})
    # Each function's own environment (a state file of an older stack has only the shared one).
    environments: dict[str, dict[str, str]] = state.get("environments") or {}
    invoker = template_invoker(
        template,
        region=str(state.get("region", DEFAULT_REGION)),
        account_id=str(state.get("account_id")),
        environments=environments or None,
    )
    started = invoker.invoke("OAuthBrowserFunction", json.loads((EVENTS / "install.json").read_text()))
    location = started["headers"]["Location"]
    query = parse_qs(urlsplit(location).query)
    nonce = started["cookies"][0].split(";")[0].split("=", 1)[1]
    if not state.get("sandbox_url"):
        raise StackNotRunningError("the local stack talks to a real UltraCart: no sandbox code to issue")
    with SandboxControl(state["sandbox_url"]) as sandbox:
        code = sandbox.issue_code(MERCHANT, query["redirect_uri"][0])
    callback = json.loads((EVENTS / "callback-success.json").read_text())
    live = {"code": code, "state": query["state"][0], "nonce": nonce}
    _write(out, "callback-success.json", fill_event(callback, live))

    hook = json.loads((EVENTS / "webhook-uninstall.json").read_text())
    signed = sign_uninstall(read_secret(state), MERCHANT)
    hook["headers"].update(signed.headers)
    hook["body"] = signed.body
    _write(out, "webhook-uninstall.json", hook)

    # The container calls the sandbox and moto on the host; the browser still uses localhost.
    def docker(env: dict[str, str]) -> dict[str, str]:
        if "ULTRACART_BASE_URL" not in env:
            return env
        return {**env, "ULTRACART_BASE_URL": for_docker(env["ULTRACART_BASE_URL"])}

    functions = invoker.loader.logical_ids
    each = {fn: docker(environments.get(fn, environment)) for fn in functions}
    _write(out, "env.json", env_json(each, for_docker(state["moto_url"])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.events", description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=None, help="state file (default .devstack/state.json)")
    parser.add_argument("--out", type=Path, default=EVENTS, help="where to write them (default events/)")
    args = parser.parse_args(argv)
    try:
        regenerate(load_state(args.state), args.out)
    except StackNotRunningError as exc:
        print(f"devstack.events: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
