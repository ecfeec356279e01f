"""Each function's role as CloudFormation receives it (after SAM's transform), judged call by call.

The local stack refuses, as AWS would, every call a function's role does not allow: its action,
its resource ARN and the condition keys the template relies on. These tests ask the same checker
about calls directly, with the roles resolved against the template's resources in moto.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bench.common import FUNCTIONS
from devstack import iam
from devstack.resources import LocalResources
from devstack.translate import translate

WORKERS = {
    "RefreshWorkerFunction": "RefreshQueue",
    "RevokeWorkerFunction": "RevokeQueue",
    "DeviceWorkerFunction": "DeviceQueue",
}
# Every function touches the table.
TABLE_ROLES = tuple(sorted(FUNCTIONS))


def checker_for(resources: LocalResources, translated: dict[str, Any] | None = None) -> iam.PolicyChecker:
    roles = iam.function_roles(translated or translate(), resources.resolve)
    denies = iam.key_policy_denies(resources.template, resources.resolve)
    return iam.PolicyChecker(roles, iam.names_of(resources), denies)


def allowed(checker: iam.PolicyChecker, function: str, service: str, operation: str, **params: Any) -> bool:
    return checker.check(function, service, operation, params).allowed


def item_key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "X"}}


@pytest.mark.parametrize("function", sorted(WORKERS))
def test_a_worker_polls_its_own_queue_and_no_other(aws: LocalResources, function: str) -> None:
    # Given the worker's role as SAM translates it
    checker = checker_for(aws)
    own = aws.queue_url(WORKERS[function])
    # Then its event source can receive and delete on its own queue ...
    for operation in ("ReceiveMessage", "DeleteMessage", "GetQueueAttributes", "ChangeMessageVisibility"):
        assert allowed(checker, function, "sqs", operation, QueueUrl=own), operation
    # ... and on no other queue of the account (SAM's AWSLambdaSQSQueueExecutionRole allows every queue)
    for other_queue in {*WORKERS.values(), "RefreshDeadLetterQueue", "RevokeDeadLetterQueue"} - {
        WORKERS[function]
    }:
        other = aws.queue_url(other_queue)
        for operation in ("ReceiveMessage", "DeleteMessage"):
            assert not allowed(checker, function, "sqs", operation, QueueUrl=other), (operation, other_queue)


@pytest.mark.parametrize("function", TABLE_ROLES)
def test_every_role_on_the_table_is_held_to_its_item_kinds(aws: LocalResources, function: str) -> None:
    # Given any function that reads or writes the table
    checker = checker_for(aws)
    # When it asks for an item kind no function but the browser's owns (an OAuth state)
    foreign = "STATE#x" if function != "OAuthBrowserFunction" else "WEBHOOK#x"
    for operation in ("GetItem", "UpdateItem", "PutItem", "DeleteItem"):
        # Then the table's leading keys refuse it
        assert not allowed(
            checker, function, "dynamodb", operation, TableName=aws.table_name, Key=item_key(foreign)
        ), operation


@pytest.mark.parametrize("function", ["TokenApiFunction", "RefreshWorkerFunction", "RevokeWorkerFunction"])
def test_token_roles_reach_installations_and_the_budget_only(aws: LocalResources, function: str) -> None:
    checker = checker_for(aws)
    table = aws.table_name
    assert allowed(checker, function, "dynamodb", "UpdateItem", TableName=table, Key=item_key("MERCHANT#M1"))
    assert allowed(checker, function, "dynamodb", "GetItem", TableName=table, Key=item_key("MERCHANT#M1"))
    assert allowed(checker, function, "dynamodb", "UpdateItem", TableName=table, Key=item_key("BUDGET#"))
    paced = function == "RefreshWorkerFunction"  # the refresh pace counter is the worker's
    assert (
        allowed(checker, function, "dynamodb", "UpdateItem", TableName=table, Key=item_key("PACE#r")) == paced
    )
    for foreign in ("WEBHOOK#x", "DEVICE#x", "RECEIPT#x", "STATE#x"):
        assert not allowed(
            checker, function, "dynamodb", "UpdateItem", TableName=table, Key=item_key(foreign)
        )


def test_the_revoke_worker_can_probe_the_key_but_encrypt_no_token(aws: LocalResources) -> None:
    # The revoke worker tells a damaged row from a failing key with a probe: a data key generated
    # and decrypted under the probe's own purpose. It cannot get a data key that seals tokens.
    checker = checker_for(aws)
    probe = {"merchant_id": "M1", "purpose": "ultracart-oauth-key-probe"}
    tokens = {"merchant_id": "M1", "purpose": "ultracart-oauth-tokens"}
    revoke = "RevokeWorkerFunction"
    key = {"KeyId": aws.key_arn, "KeySpec": "AES_256"}
    assert allowed(checker, revoke, "kms", "GenerateDataKey", **key, EncryptionContext=probe)
    assert allowed(checker, revoke, "kms", "Decrypt", KeyId=aws.key_arn, EncryptionContext=probe)
    assert allowed(checker, revoke, "kms", "Decrypt", KeyId=aws.key_arn, EncryptionContext=tokens)
    assert not allowed(checker, revoke, "kms", "GenerateDataKey", **key, EncryptionContext=tokens)
    assert not allowed(checker, revoke, "kms", "Encrypt", KeyId=aws.key_arn, EncryptionContext=tokens)


@pytest.mark.parametrize(
    "function",
    [
        "OAuthBrowserFunction",
        "TokenApiFunction",
        "RefreshWorkerFunction",
        "AdminApiFunction",
        "DeviceWorkerFunction",
    ],
)
def test_token_writers_get_data_keys_for_tokens_and_encrypt_nothing(
    aws: LocalResources, function: str
) -> None:
    # Envelope encryption: a writer asks KMS for a data key bound to the merchant and the tokens'
    # purpose; KMS Encrypt is no longer needed anywhere, so no role keeps it.
    checker = checker_for(aws)
    tokens = {"merchant_id": "M1", "purpose": "ultracart-oauth-tokens"}
    key = {"KeyId": aws.key_arn, "KeySpec": "AES_256"}
    assert allowed(checker, function, "kms", "GenerateDataKey", **key, EncryptionContext=tokens)
    other = {"merchant_id": "M1", "purpose": "something-else"}
    assert not allowed(checker, function, "kms", "GenerateDataKey", **key, EncryptionContext=other)
    assert not allowed(checker, function, "kms", "Encrypt", KeyId=aws.key_arn, EncryptionContext=tokens)


def test_the_key_policy_refuses_a_call_without_a_merchant(aws: LocalResources) -> None:
    checker = checker_for(aws)
    assert not allowed(
        checker, "TokenApiFunction", "kms", "Decrypt", KeyId=aws.key_arn, EncryptionContext={"purpose": "x"}
    )


def test_functions_publish_only_as_this_stack(aws: LocalResources) -> None:
    checker = checker_for(aws)
    entry = {"EventBusName": aws.event_bus_name, "DetailType": "App Uninstalled", "Detail": "{}"}
    ours = [{**entry, "Source": "ultracart.oauth"}]
    theirs = [{**entry, "Source": "com.example.myapp"}]
    assert allowed(checker, "RefreshWorkerFunction", "events", "PutEvents", Entries=ours)
    assert not allowed(checker, "RefreshWorkerFunction", "events", "PutEvents", Entries=theirs)


def test_a_role_missing_one_statement_is_caught(aws: LocalResources) -> None:
    # Given the translated template with one statement removed from the revoke worker's role
    translated = copy.deepcopy(translate())
    policy = translated["Resources"]["RevokeWorkerFunctionRole"]["Properties"]["Policies"][0]
    statements = policy["PolicyDocument"]["Statement"]
    policy["PolicyDocument"]["Statement"] = [s for s in statements if s.get("Sid") != "DecryptTokens"]
    context = {"merchant_id": "M1", "purpose": "ultracart-oauth-tokens"}
    # Then the decrypt its code makes is refused and recorded, where the real role allows it
    assert allowed(
        checker_for(aws),
        "RevokeWorkerFunction",
        "kms",
        "Decrypt",
        KeyId=aws.key_arn,
        EncryptionContext=context,
    )
    narrowed = checker_for(aws, translated)
    assert not allowed(
        narrowed, "RevokeWorkerFunction", "kms", "Decrypt", KeyId=aws.key_arn, EncryptionContext=context
    )
    [violation] = narrowed.take_violations()
    assert violation.call.action == "kms:Decrypt"


def test_a_call_the_checker_cannot_read_is_an_error_not_a_pass(aws: LocalResources) -> None:
    checker = checker_for(aws)
    with pytest.raises(iam.UncheckableCallError):
        checker.check("TokenApiFunction", "dynamodb", "BatchWriteItem", {"RequestItems": {}})
