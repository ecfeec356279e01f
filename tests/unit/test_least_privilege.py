"""Least privilege: each function's IAM statements equal what its code calls, scoped to the stack.

The table below is what the code calls (kept in step with tests/integration/test_call_counts.py,
which observes the calls); the template must grant exactly that, on exactly those resources.
"""

from __future__ import annotations

from typing import Any

import pytest

from devstack.resources import load_template

# What each function's code calls (plus the SQS poller rights the event source adds itself).
CALLS: dict[str, set[str]] = {
    "OAuthBrowserFunction": {
        "dynamodb:PutItem",  # state, success receipt
        "dynamodb:GetItem",  # success receipt (GET /installed)
        "dynamodb:DeleteItem",  # consume state
        "dynamodb:UpdateItem",  # save installation
        "kms:Encrypt",
        "events:PutEvents",
        "secretsmanager:GetSecretValue?",  # only with UltraCartClientSecretArn
    },
    "TokenApiFunction": {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",  # lease, pace, token write, reauthorization
        "kms:Encrypt",
        "kms:Decrypt",
        "events:PutEvents",
        "secretsmanager:GetSecretValue?",
    },
    "UninstallWebhookFunction": {
        "dynamodb:PutItem",  # webhook id
        "dynamodb:DeleteItem",  # forget the id when queueing failed
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue",  # the webhook secret
    },
    "RefreshPlannerFunction": {"dynamodb:Query", "sqs:SendMessage"},
    "RefreshWorkerFunction": {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "kms:Encrypt",
        "kms:Decrypt",
        "events:PutEvents",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",  # re-queue what the pace refused, delayed to the next window
        "secretsmanager:GetSecretValue?",
    },
    "RevokeWorkerFunction": {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "kms:Decrypt",
        "events:PutEvents",
        "sqs:ChangeMessageVisibility",
        "secretsmanager:GetSecretValue?",
    },
}

# SAM policy templates used in the template, expanded to the actions they grant.
SAM_TEMPLATES = {
    "EventBridgePutEventsPolicy": {"events:PutEvents"},
    "SQSSendMessagePolicy": {"sqs:SendMessage"},  # SAM grants sqs:SendMessage* (incl. batch)
    "AWSSecretsManagerGetSecretValuePolicy": {"secretsmanager:GetSecretValue"},
}


def granted(policies: list[Any]) -> tuple[set[str], list[Any]]:
    """(actions, resources) of a function's Policies; conditional ones get a '?' suffix."""
    actions: set[str] = set()
    resources: list[Any] = []

    def walk(policy: Any, conditional: bool) -> None:
        if isinstance(policy, dict) and "Fn::If" in policy:
            walk(policy["Fn::If"][1], True)
            return
        if isinstance(policy, dict) and policy.get("Ref") == "AWS::NoValue":
            return
        assert isinstance(policy, dict), f"managed policy by name is not allowed: {policy}"
        for name, args in policy.items():
            if name == "Statement":
                for statement in args:
                    assert statement["Effect"] == "Allow"
                    found = statement["Action"]
                    for action in [found] if isinstance(found, str) else found:
                        actions.add(action + ("?" if conditional else ""))
                    resources.append(statement["Resource"])
            else:
                assert name in SAM_TEMPLATES, f"unexpected policy template {name}"
                actions.update(a + ("?" if conditional else "") for a in SAM_TEMPLATES[name])
                resources.append(args)

    for policy in policies:
        walk(policy, False)
    return actions, resources


@pytest.mark.parametrize("function", sorted(CALLS))
def test_each_function_is_granted_exactly_what_its_code_calls(function: str) -> None:
    template = load_template()
    properties = template["Resources"][function]["Properties"]
    actions, resources = granted(properties.get("Policies", []))
    assert actions == CALLS[function]
    for resource in resources:
        assert resource != "*" and "*" not in str(resource).replace("index/DueIndex", ""), resource


def test_only_the_functions_that_need_the_key_can_use_it() -> None:
    decrypters = {f for f, calls in CALLS.items() if "kms:Decrypt" in calls}
    assert decrypters == {"TokenApiFunction", "RefreshWorkerFunction", "RevokeWorkerFunction"}
    assert not any(c.startswith("kms:") for c in CALLS["UninstallWebhookFunction"])
    assert not any(c.startswith("kms:") for c in CALLS["RefreshPlannerFunction"])


def test_the_key_policy_requires_the_merchant_encryption_context() -> None:
    template = load_template()
    statements = template["Resources"]["TokenKey"]["Properties"]["KeyPolicy"]["Statement"]
    denies = [s for s in statements if s["Effect"] == "Deny"]
    assert any(
        s.get("Condition", {}).get("Null", {}).get("kms:EncryptionContext:merchant_id") in ("true", True)
        and {"kms:Encrypt", "kms:Decrypt"}
        <= set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        for s in denies
    ), denies
