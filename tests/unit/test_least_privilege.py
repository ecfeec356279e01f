"""Least privilege: each function's IAM statements equal what its code calls, scoped to the stack.

The table below is what the code calls (kept in step with tests/integration/test_call_counts.py,
which observes the calls); each function's role as CloudFormation receives it (after SAM's
transform, managed policies included) must grant exactly that, on exactly those resources. The
local stack enforces the same roles on every call (devstack.iam).
"""

from __future__ import annotations

from typing import Any

import pytest

from devstack.resources import load_template
from devstack.translate import translate

# What each function's code calls, and what its SQS event source mapping calls with its role.
POLLING = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}
CALLS: dict[str, set[str]] = {
    "OAuthBrowserFunction": {
        "dynamodb:PutItem",  # state; success receipt
        "dynamodb:DeleteItem",  # consume state
        "dynamodb:UpdateItem",  # save installation; the shared UltraCart call budget
        "dynamodb:GetItem",  # the reload-safe success receipt; a Deny: was the state issued here?
        "kms:GenerateDataKey",  # the data key the new tokens are sealed with
        "events:PutEvents",
        "sqs:SendMessage",  # a reinstall: the replaced grant, to the revoke queue
        "secretsmanager:GetSecretValue?",  # only with UltraCartClientSecretArn
    },
    "TokenApiFunction": {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",  # lease, budget, token write, recovery record, reauthorization
        "dynamodb:PutItem",  # an install session (SESSION# items only)
        "kms:GenerateDataKey",  # a data key before the refresh; a damaged row's key probe
        "kms:Decrypt",
        "events:PutEvents",
        "secretsmanager:GetSecretValue?",
    },
    "UninstallWebhookFunction": {
        "dynamodb:GetItem",  # was this webhook id queued already?
        "dynamodb:PutItem",  # webhook id, recorded after the uninstall is queued
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue",  # the webhook secret
    },
    "RefreshPlannerFunction": {
        "dynamodb:Query",
        "dynamodb:GetItem",  # what is left of the UltraCart budget; the DueIndex shard mark
        "dynamodb:UpdateItem",  # the shard mark: recorded when DueShards grows, lowered once drained
        "sqs:SendMessage",
    },
    "RefreshWorkerFunction": {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "kms:GenerateDataKey",  # a data key before the refresh; a damaged row's key probe
        "kms:Decrypt",
        "events:PutEvents",
        "sqs:SendMessage",  # re-queue what was not attempted (pace, budget, time); recovery message
        *POLLING,
        "secretsmanager:GetSecretValue?",
    },
    "RevokeWorkerFunction": {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "kms:Decrypt",
        "kms:GenerateDataKey",  # the key probe only (its own purpose): is a row KMS rejects damaged?
        "events:PutEvents",
        "sqs:SendMessage",  # a revoke UltraCart could not confirm comes back as a delayed message
        *POLLING,
        "secretsmanager:GetSecretValue?",
    },
    "AdminApiFunction": {
        "dynamodb:GetItem",  # show, budget used
        "dynamodb:Query",  # StatusIndex pages and counts, DueIndex counts
        "dynamodb:UpdateItem",  # refresh now: lease, budget, token write, reauthorization
        "kms:GenerateDataKey",  # a data key before the refresh; a damaged row's key probe
        "kms:Decrypt",
        "events:PutEvents",  # Operator Action; the refresh's own events
        "sqs:GetQueueAttributes",  # stats
        "sqs:SendMessage",  # uninstall (revoke queue), redrive (both queues), recovery message
        "sqs:ReceiveMessage",  # redrive: from the dead-letter queues only
        "sqs:DeleteMessage",
        "secretsmanager:GetSecretValue?",
    },
    "DeviceFlowFunction": {
        "dynamodb:PutItem",  # the device authorization
        "dynamodb:GetItem",  # its status
        "dynamodb:UpdateItem",  # the UltraCart budget; ending an authorization whose poll was not queued
        "kms:Encrypt",  # the device code, with the device-code key only
        "sqs:SendMessage",  # the first poll
        "secretsmanager:GetSecretValue?",
    },
    "DeviceWorkerFunction": {
        "dynamodb:GetItem",  # the installation a spent device code may already have stored
        "dynamodb:UpdateItem",  # claim, next poll, outcome; the installation; events parked; budget
        "kms:Decrypt",  # the device code, with the device-code key only
        "kms:GenerateDataKey",  # the tokens' data key, with the token key only
        "events:PutEvents",
        "sqs:SendMessage",  # the next poll, delayed; a replaced grant, to the revoke queue
        *POLLING,
        "secretsmanager:GetSecretValue?",
    },
}

# The public functions (reached from the internet) touch the table only under these partition
# key prefixes (dynamodb:LeadingKeys), with these actions each: a bug or an injection in the
# browser or webhook path cannot rewrite or delete another kind of item, such as the MERCHANT#
# items that hold the only copy of the refresh tokens (the browser only creates them, with one
# UpdateItem). Every other function's table rights are unconditional on the key.
ITEM_PREFIXES: dict[str, dict[str, set[str]]] = {
    "OAuthBrowserFunction": {
        "STATE#*": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"},  # Get: whose Deny
        "MERCHANT#*": {"dynamodb:UpdateItem"},
        "BUDGET#*": {"dynamodb:UpdateItem"},
        "RECEIPT#*": {"dynamodb:GetItem", "dynamodb:PutItem"},
        # An install link's session: read at /install, marked used (or released) at the callback.
        "SESSION#*": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
    },
    "UninstallWebhookFunction": {"WEBHOOK#*": {"dynamodb:GetItem", "dynamodb:PutItem"}},
    # IAM-signed, but confined all the same: its own items and the budget, never an installation.
    "DeviceFlowFunction": {
        "DEVICE#*": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
        "BUDGET#*": {"dynamodb:UpdateItem"},
    },
    "DeviceWorkerFunction": {
        "DEVICE#*": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        "MERCHANT#*": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        "BUDGET#*": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
    },
}

# The AWS managed policies a role may carry: logs (and X-Ray). Never one that reaches every
# resource of a kind, such as AWSLambdaSQSQueueExecutionRole (every queue of the account).
ALLOWED_MANAGED = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}


def role_policies(function: str) -> list[Any]:
    """The function's role's policies as CloudFormation receives them, each as a document (or a
    ``Fn::If`` of one); SAM's ``sqs:SendMessage*`` is the one action it needs."""
    translated = translate()
    role_ref = translated["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    properties = translated["Resources"][role_ref]["Properties"]
    for arn in properties.get("ManagedPolicyArns", []):
        # A role the template declares names the X-Ray policy only with tracing on (both branches).
        branches = arn["Fn::If"][1:] if isinstance(arn, dict) and "Fn::If" in arn else [arn]
        for branch in branches:
            if branch == {"Ref": "AWS::NoValue"}:
                continue
            resolved = (
                branch if isinstance(branch, str) else branch["Fn::Sub"].replace("${AWS::Partition}", "aws")
            )
            assert resolved in ALLOWED_MANAGED, f"{function}: managed policy {resolved}"

    def document(policy: Any) -> Any:
        if isinstance(policy, dict) and "Fn::If" in policy:
            condition, present, absent = policy["Fn::If"]
            return {"Fn::If": [condition, document(present), absent]}
        if isinstance(policy, dict) and policy.get("Ref") == "AWS::NoValue":
            return policy
        statements = policy["PolicyDocument"]["Statement"]
        for statement in statements:
            found = statement["Action"]
            actions = [found] if isinstance(found, str) else found
            statement["Action"] = ["sqs:SendMessage" if a == "sqs:SendMessage*" else a for a in actions]
        return {"Statement": statements}

    return [document(policy) for policy in properties.get("Policies", [])]


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
                raise AssertionError(f"unexpected policy {name}")

    for policy in policies:
        walk(policy, False)
    return actions, resources


@pytest.mark.parametrize("function", sorted(CALLS))
def test_each_function_is_granted_exactly_what_its_code_calls(function: str) -> None:
    actions, resources = granted(role_policies(function))
    assert actions == CALLS[function]
    for resource in resources:
        assert resource != "*" and "*" not in str(resource).replace("index/DueIndex", "").replace(
            "index/StatusIndex", ""
        ), resource


def table_rights(policies: list[Any]) -> dict[str, set[str]]:
    """Key prefix (``*`` when unconditioned) -> the dynamodb actions a function's statements allow."""
    rights: dict[str, set[str]] = {}
    for policy in policies:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            found = statement["Action"]
            actions = {a for a in ([found] if isinstance(found, str) else found) if a.startswith("dynamodb:")}
            if not actions:
                continue
            targets = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            if all("/index/" in str(target) for target in targets):
                continue  # an index holds keys and listed attributes only, never a token (Query)
            condition = statement.get("Condition")
            if condition is None:
                prefixes = ["*"]
            else:
                assert list(condition) == ["ForAllValues:StringLike"], condition
                assert list(condition["ForAllValues:StringLike"]) == ["dynamodb:LeadingKeys"], condition
                prefixes = condition["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
            for prefix in prefixes:
                rights.setdefault(prefix, set()).update(actions)
    return rights


@pytest.mark.parametrize("function", sorted(CALLS))
def test_public_functions_touch_only_their_own_key_prefixes(function: str) -> None:
    rights = table_rights(role_policies(function))
    if function in ITEM_PREFIXES:
        assert rights == ITEM_PREFIXES[function]
        # and together they are exactly the table calls the code makes
        assert set().union(*rights.values()) == {c for c in CALLS[function] if c.startswith("dynamodb:")}
    else:
        # Every role is confined to key prefixes: no function reaches every item kind.
        assert rights and all(prefix.endswith("#*") for prefix in rights), rights
    if function == "RefreshPlannerFunction":
        # The planner queries DueIndex (an index: not an item right), and touches items only to
        # read the budget and keep its shard mark.
        assert rights == {
            "BUDGET#*": {"dynamodb:GetItem"},
            "SHARDS#*": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        }


def test_only_the_functions_that_need_the_key_can_use_it() -> None:
    decrypters = {f for f, calls in CALLS.items() if "kms:Decrypt" in calls}
    assert decrypters == {
        "TokenApiFunction",
        "RefreshWorkerFunction",
        "RevokeWorkerFunction",
        "AdminApiFunction",
        "DeviceWorkerFunction",
    }
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


def test_the_device_functions_use_the_device_code_key_for_codes_and_the_token_key_only_to_encrypt() -> None:

    def kms(function: str) -> dict[str, set[str]]:
        rights: dict[str, set[str]] = {}
        for policy in role_policies(function):
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                found = statement["Action"]
                for action in [found] if isinstance(found, str) else found:
                    if action.startswith("kms:"):
                        rights.setdefault(statement["Resource"]["Fn::GetAtt"][0], set()).add(action)
        return rights

    assert kms("DeviceFlowFunction") == {"DeviceCodeKey": {"kms:Encrypt"}}
    assert kms("DeviceWorkerFunction") == {
        "DeviceCodeKey": {"kms:Decrypt"},
        "TokenKey": {"kms:GenerateDataKey"},
    }
    others = set(CALLS) - {"DeviceFlowFunction", "DeviceWorkerFunction"}
    assert all("DeviceCodeKey" not in kms(function) for function in others)


def test_the_consumer_policy_allows_only_invoking_the_token_and_install_session_routes() -> None:
    template = load_template()
    managed = {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::IAM::ManagedPolicy"
    }
    assert list(managed) == ["TokenConsumerPolicy"]
    document = managed["TokenConsumerPolicy"]["Properties"]["PolicyDocument"]
    assert len(document["Statement"]) == 1
    statement = document["Statement"][0]
    assert set(statement) == {"Sid", "Effect", "Action", "Resource"}
    assert statement["Effect"] == "Allow"
    assert statement["Action"] in ("execute-api:Invoke", ["execute-api:Invoke"])
    arns = [resource["Fn::Sub"] for resource in statement["Resource"]]
    api = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${HttpApi}"
    # The token route, and the install links (POST /install-sessions): nothing else.
    assert arns == [f"{api}/*/GET/tokens/*", f"{api}/*/POST/install-sessions"]
    # Nothing attaches it: the app's own roles do, from the output.
    for resource in template["Resources"].values():
        assert "TokenConsumerPolicy" not in str(resource.get("Properties", {}).get("ManagedPolicyArns", ""))


def test_the_consumer_policy_is_exported_under_the_stacks_name() -> None:
    output = load_template()["Outputs"]["TokenConsumerPolicyArn"]
    assert output["Value"] == {"Ref": "TokenConsumerPolicy"}
    assert output["Export"]["Name"] == {"Fn::Sub": "${AWS::StackName}-TokenConsumerPolicyArn"}
