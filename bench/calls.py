"""Calls per operation: AWS calls (botocore hooks on the package's clients) and UltraCart calls
(the sandbox's request log), over real HTTP to moto's server and the sandbox.

The same counting as tests/integration/test_call_counts.py (which asserts the budgets in CI);
here every operation is listed with its calls by operation name, in the template's default budget
scope (``application``: each UltraCart call also takes the line, and gives it back after, one
more write per call than in the ``merchant`` scope).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench import scenarios
from bench.common import Live, wire_process


@dataclass
class CallRow:
    operation: str
    aws: Counter[str]
    ultracart: list[str]
    aws_budget: int | None
    ultracart_budget: int | None
    budget_text: str
    outcome: str

    @property
    def ok(self) -> bool | None:
        if self.aws_budget is None or self.ultracart_budget is None:
            return None
        return sum(self.aws.values()) <= self.aws_budget and len(self.ultracart) <= self.ultracart_budget

    def as_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "aws": dict(self.aws),
            "aws_total": sum(self.aws.values()),
            "ultracart": self.ultracart,
            "budget": self.budget_text,
            "ok": self.ok,
            "outcome": self.outcome,
        }


def _uc_calls(live: Live) -> list[str]:
    names = []
    for request in live.sandbox.requests():
        name = request.endpoint or request.path
        if request.grant_type:
            name += f"({request.grant_type})"
        names.append(name)
    return names


def _through_an_install_link(live: Live, invoke: Any, step: Any) -> None:
    """An install session: created by the app's backend, opened, completed by the callback."""
    import json

    from tests.support.lambdas import load_event

    answers: dict[str, Any] = {}

    def create() -> Any:
        answers["link"] = invoke("TokenApiFunction", load_event("install-sessions-create.json"))
        return answers["link"]["statusCode"]

    def install() -> Any:
        url = json.loads(answers["link"]["body"])["install_url"]
        event = scenarios.install_event()
        event["rawQueryString"] = urlsplit(url).query
        answers["start"] = invoke("OAuthBrowserFunction", event)
        return answers["start"]["statusCode"]

    def callback() -> Any:
        start = answers["start"]
        state = parse_qs(urlsplit(start["headers"]["Location"]).query)["state"][0]
        nonce = start["cookies"][0].split(";")[0].split("=", 1)[1]
        code = live.sandbox.issue_code("CALLS9", scenarios.REDIRECT)
        return invoke("OAuthBrowserFunction", scenarios.callback_event(code, state, nonce))["statusCode"]

    step("install session (POST /install-sessions)", (1, 0), "1 + 0", create)
    step("install through a link (GET /install?session=)", (2, 0), "2 + 0 (the session read)", install)
    step(
        "callback through an install link",
        (8, 1),
        "≤ 5 + 2 per UltraCart call, + 1, + 1 (the session marked used)",
        callback,
    )


def measure(live: Live) -> list[CallRow]:
    from devstack.invoke import template_invoker
    from devstack.resources import load_template, resources_of_type
    from tests.support.calls import AwsCallCounter
    from tests.support.lambdas import load_event
    from ucoauth.usecases.tokens import clear_token_cache, get_access_token

    live.reset()
    services = wire_process(live.function_env("RefreshWorkerFunction"))
    # Each handler runs with exactly its own environment from the template, as in Lambda (the
    # AWS and UltraCart clients, and so the counter's hooks, are kept across invocations).
    template = load_template()
    functions = resources_of_type(template, "AWS::Serverless::Function")
    invoke = template_invoker(template, environments={f: live.function_env(f) for f in functions}).invoke

    def follow_to_installed(response: dict[str, Any]) -> dict[str, Any]:
        receipt = next(c for c in response["cookies"] if c.startswith("__Host-ucoauth_receipt="))
        event = load_event("installed.json", receipt=receipt.split(";")[0].split("=", 1)[1])
        page: dict[str, Any] = invoke("OAuthBrowserFunction", event)
        return page

    counter = AwsCallCounter()
    rows: list[CallRow] = []

    def step(
        operation: str, budget: tuple[int, int] | None, budget_text: str, run: Any, *, count: bool = True
    ) -> None:
        counter.reset()
        live.sandbox.clear_requests()
        outcome = run()
        rows.append(
            CallRow(
                operation=operation,
                aws=counter.by_operation() if count else Counter(),
                ultracart=_uc_calls(live),
                aws_budget=None if budget is None else budget[0],
                ultracart_budget=None if budget is None else budget[1],
                budget_text=budget_text,
                outcome=str(outcome),
            )
        )

    # -- browser: /install, then the callback with and without merchant_id in the token answer
    for include_merchant_id, merchant_id in ((True, "CALLS1"), (False, "CALLS2")):
        live.sandbox.configure(include_merchant_id=include_merchant_id)
        start: dict[str, Any] = {}

        def install(start: dict[str, Any] = start) -> Any:
            start.update(invoke("OAuthBrowserFunction", scenarios.install_event()))
            return start["statusCode"]

        if include_merchant_id:
            step("install (GET /install)", (1, 0), "1 + 0", install)
        else:
            install()
        state = parse_qs(urlsplit(start["headers"]["Location"]).query)["state"][0]
        nonce = start["cookies"][0].split(";")[0].split("=", 1)[1]
        code = live.sandbox.issue_code(merchant_id, scenarios.REDIRECT)
        event = scenarios.callback_event(code, state, nonce)
        answer: dict[str, Any] = {}

        def callback(event: dict[str, Any] = event, answer: dict[str, Any] = answer) -> Any:
            answer.update(invoke("OAuthBrowserFunction", event))
            return answer["statusCode"]

        if include_merchant_id:
            step(
                "callback (token answer has merchant_id)",
                (7, 1),
                "≤ 5 + 2 per UltraCart call (budget unit, line given back), + 1",
                callback,
            )
            step(
                "success page (GET /installed, and each reload)",
                (1, 0),
                "1 + 0",
                lambda answer=answer: follow_to_installed(answer)["statusCode"],
            )
        else:
            step(
                "callback (no merchant_id: + GET /oauth/me)",
                (9, 2),
                "≤ 5 + 2 per UltraCart call, + 1 (+1 me)",
                callback,
            )
    live.sandbox.configure(include_merchant_id=True)
    _through_an_install_link(live, invoke, step)

    # -- refresh worker: one due record
    scenarios.seed_installation(services, live, "CALLS3", expires_in=60)
    step(
        "refresh (worker, 1 due record)",
        (7, 1),
        "≤ 6 + 1 (+1: the line given back)",
        lambda: invoke("RefreshWorkerFunction", scenarios.refresh_event("CALLS3")),
    )

    # -- token access: the API, the in-memory cache of get_access_token, an inline refresh
    scenarios.seed_installation(services, live, "CALLS4", expires_in=3600)
    step(
        "token access, fresh, its data key not yet opened here (GET /tokens)",
        (2, 0),
        "≤ 2 + 0 (GetItem, the data key's Decrypt)",
        lambda: invoke("TokenApiFunction", scenarios.tokens_event("CALLS4"))["statusCode"],
    )
    step(
        "token access, warm: its data key cached (GET /tokens)",
        (1, 0),
        "1 + 0 (GetItem)",
        lambda: invoke("TokenApiFunction", scenarios.tokens_event("CALLS4"))["statusCode"],
    )
    clear_token_cache()
    get_access_token("CALLS4")
    step(
        "token access, cached (get_access_token)",
        (0, 0),
        "0 + 0",
        lambda: get_access_token("CALLS4").merchant_id,
    )
    # The first read of a lifetime the worker refreshed records its use (once per lifetime).
    scenarios.seed_installation(services, live, "CALLS8", expires_in=60)
    invoke("RefreshWorkerFunction", scenarios.refresh_event("CALLS8"))
    step(
        "token access, first read of a token lifetime (GET /tokens)",
        (3, 0),
        "≤ 2 + 1 conditional write, once per token lifetime",
        lambda: invoke("TokenApiFunction", scenarios.tokens_event("CALLS8"))["statusCode"],
    )
    scenarios.seed_installation(services, live, "CALLS5", expires_in=50)
    step(
        "token access, inline refresh (expires in 50 s)",
        None,
        "(not budgeted)",
        lambda: invoke("TokenApiFunction", scenarios.tokens_event("CALLS5"))["statusCode"],
    )

    # -- uninstall webhook: the first call of a process reads the secret, later ones do not
    secret = live.resources.webhook_secret_value
    step(
        "webhook, cold (reads the secret once)",
        None,
        "(not budgeted)",
        lambda: invoke("UninstallWebhookFunction", scenarios.webhook_event(secret, "CALLS6"))["statusCode"],
    )
    step(
        "webhook, warm",
        (3, 0),
        "≤ 3 + 0",
        lambda: invoke("UninstallWebhookFunction", scenarios.webhook_event(secret, "CALLS6"))["statusCode"],
    )

    # -- revoke worker: both tokens revoked at UltraCart, ciphertext shredded
    scenarios.seed_installation(services, live, "CALLS7", expires_in=3600)
    step(
        "revoke (worker, 1 record)",
        (8, 2),
        "≤ 6 + 2 (+1 per call: the line given back)",
        lambda: invoke("RevokeWorkerFunction", scenarios.revoke_event("CALLS7")),
    )

    # -- planner: 10 due installations (one Query per shard, one SendMessageBatch per 10, the
    # budget and the shard mark read; the mark is written the first run, as here)
    for index in range(10):
        scenarios.seed_installation(services, live, f"CALLP{index}", expires_in=60)
    shards = services.settings.due_shards
    step(
        "planner (10 due installations)",
        (shards + 4, 0),
        f"≤ {shards} Query + 1 batch + 1 budget read + 1 shard mark read (+ 1 write, the first run)",
        lambda: invoke("RefreshPlannerFunction", scenarios.schedule_event()),
    )
    return rows
