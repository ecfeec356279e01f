"""The `/__sandbox/` JSON endpoints: the Python control API, over HTTP for out-of-process use.

    GET    /__sandbox/health              {"ok", "base_url", "client_id"}
    GET    /__sandbox/configure           current settings
    POST   /__sandbox/configure           {setting: value, ...} -> new settings
                                          ("refuse_client": true: the app itself is refused)
    POST   /__sandbox/client_secret       {"client_secret": "..." | null}: the secret token, revoke
                                          and device authorize calls must send (null: none)
    GET    /__sandbox/faults              {"faults": [... with "remaining"]}
    POST   /__sandbox/faults              {"endpoint", "status", "body", "uc_rest_error", "latency_ms",
                                           "timeout", "malformed", "reset", "after_success",
                                           "grant_type", "times"} -> 201
    DELETE /__sandbox/faults
    GET    /__sandbox/requests[?endpoint=]  {"requests": [RecordedRequest as JSON, ...]}
    DELETE /__sandbox/requests
    POST   /__sandbox/reset
    POST   /__sandbox/codes               {"merchant_id", "redirect_uri"} -> 201 {"code"}
    POST   /__sandbox/tokens              {"merchant_id", "expires_in"?}
                                          -> 201 {"access_token", "refresh_token"}
    GET    /__sandbox/tokens/valid?token= {"access_token_valid", "refresh_token_valid"}
    POST   /__sandbox/tokens/expire       {"merchant_id"} -> {"expired": n}: its access tokens expire now
    GET    /__sandbox/grants?merchant_id= {"refresh_tokens", "access_tokens"}: what UltraCart honours
    POST   /__sandbox/clock               {"advance_seconds"}
    POST   /__sandbox/device              {"user_code", "action": "approve"|"deny"|"expire"|"slow_down",
                                           "merchant_id" (approve), "times" (slow_down)}

Bad arguments answer 400 {"error": "..."}.
"""

from __future__ import annotations

import json
from typing import Any

from ucsandbox.faults import Fault
from ucsandbox.models import BASE_PATH, CONTROL_PATH, DEVICE_ACTIONS
from ucsandbox.replies import Reply, json_reply
from ucsandbox.state import SandboxState


class _BadRequest(Exception):
    pass


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise _BadRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _BadRequest("body must be a JSON object")
    return data


def _string(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise _BadRequest(f"{name} must be a non-empty string")
    return value


def handle(
    state: SandboxState, root_url: str, method: str, path: str, query: dict[str, str], body: bytes
) -> Reply:
    """Answer one control request; never recorded in the request log and never faulted."""
    route = path[len(CONTROL_PATH) :].strip("/")
    try:
        return _dispatch(state, root_url, method, route, query, body)
    except (_BadRequest, ValueError, TypeError) as exc:
        return json_reply(400, {"error": str(exc)})


def _dispatch(
    state: SandboxState, root_url: str, method: str, route: str, query: dict[str, str], body: bytes
) -> Reply:
    key = (method, route)
    if route in ("", "health") and method == "GET":
        return json_reply(200, {"ok": True, "base_url": root_url + BASE_PATH, "client_id": state.client_id})
    if key == ("GET", "configure"):
        return json_reply(200, state.settings.to_json())
    if key == ("POST", "configure"):
        return json_reply(200, state.apply_settings(_json_object(body)).to_json())
    if key == ("POST", "client_secret"):
        secret = _json_object(body).get("client_secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise _BadRequest("client_secret must be a non-empty string or null")
        state.set_client_secret(secret)
        return json_reply(200, {"ok": True})
    if key == ("GET", "faults"):
        return json_reply(200, {"faults": state.faults.pending()})
    if key == ("POST", "faults"):
        state.faults.add(Fault.from_json(_json_object(body)))
        return json_reply(201, {"ok": True})
    if key == ("DELETE", "faults"):
        state.clear_faults()
        return json_reply(200, {"ok": True})
    if key == ("GET", "requests"):
        entries = state.requests(query.get("endpoint") or None)
        return json_reply(200, {"requests": [entry.to_json() for entry in entries]})
    if key == ("DELETE", "requests"):
        state.clear_requests()
        return json_reply(200, {"ok": True})
    if key == ("POST", "reset"):
        state.reset()
        return json_reply(200, {"ok": True})
    if key == ("POST", "codes"):
        data = _json_object(body)
        code = state.issue_code(_string(data, "merchant_id"), _string(data, "redirect_uri"))
        return json_reply(201, {"code": code})
    if key == ("POST", "tokens"):
        data = _json_object(body)
        expires_in = data.get("expires_in")
        if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(expires_in, int)):
            raise _BadRequest("expires_in must be an integer number of seconds or null")
        pair = state.issue_tokens(_string(data, "merchant_id"), expires_in)
        return json_reply(201, {"access_token": pair.access_token, "refresh_token": pair.refresh_token})
    if key == ("GET", "tokens/valid"):
        token = query.get("token", "")
        if not token:
            raise _BadRequest("token query parameter is required")
        return json_reply(
            200,
            {
                "access_token_valid": state.token_is_valid(token),
                "refresh_token_valid": state.refresh_token_is_valid(token),
            },
        )
    if key == ("POST", "tokens/expire"):
        expired = state.expire_access_tokens(_string(_json_object(body), "merchant_id"))
        return json_reply(200, {"expired": expired})
    if key == ("GET", "grants"):
        merchant_id = query.get("merchant_id", "")
        if not merchant_id:
            raise _BadRequest("merchant_id query parameter is required")
        grants = state.live_grants(merchant_id)
        return json_reply(
            200, {"refresh_tokens": grants.refresh_tokens, "access_tokens": grants.access_tokens}
        )
    if key == ("POST", "clock"):
        seconds = _json_object(body).get("advance_seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise _BadRequest("advance_seconds must be a non-negative number")
        state.advance_time(seconds)
        return json_reply(200, {"ok": True})
    if key == ("POST", "device"):
        data = _json_object(body)
        merchant: object = data.get("merchant_id")
        times = data.get("times", 1)
        if merchant is not None and not isinstance(merchant, str):
            raise _BadRequest("merchant_id must be a string")
        action = data.get("action")
        if action not in DEVICE_ACTIONS:
            raise _BadRequest(f"action must be one of {', '.join(DEVICE_ACTIONS)}")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise _BadRequest("times must be a positive integer")
        state.device(_string(data, "user_code"), action, merchant_id=merchant, times=times)
        return json_reply(200, {"ok": True})
    known = {
        "",
        "device",
        "health",
        "configure",
        "client_secret",
        "faults",
        "requests",
        "reset",
        "codes",
        "tokens",
        "tokens/valid",
        "tokens/expire",
        "grants",
        "clock",
    }
    if route in known:
        return json_reply(405, {"error": f"{method} not allowed on {CONTROL_PATH}/{route}"})
    return json_reply(404, {"error": f"no control endpoint {CONTROL_PATH}/{route}"})
