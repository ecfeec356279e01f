"""Unit tests share one in-process stack per worker: each starts with it empty, whatever the last left."""

from __future__ import annotations

import boto3
from moto.core.models import responses_mock

from devstack.resources import LocalResources
from tests.support.moto_stack import in_process_stack


def test_the_next_test_finds_no_item_and_no_message(aws: LocalResources) -> None:
    dynamodb = boto3.client("dynamodb", region_name=aws.region)
    sqs = boto3.client("sqs", region_name=aws.region)
    dynamodb.put_item(TableName=aws.table_name, Item={"pk": {"S": "LEFT#1"}, "sk": {"S": "X"}})
    sqs.send_message(QueueUrl=aws.refresh_queue_url, MessageBody="waiting")
    sqs.send_message(QueueUrl=aws.refresh_queue_url, MessageBody="delayed", DelaySeconds=900)
    sqs.send_message(QueueUrl=aws.revoke_queue_url, MessageBody="in flight")
    assert sqs.receive_message(QueueUrl=aws.revoke_queue_url, WaitTimeSeconds=0)["Messages"]
    sqs.send_message(QueueUrl=aws.revoke_dlq_url, MessageBody="dead")

    with in_process_stack(aws.region) as next_test:
        assert next_test == aws  # the same resources, not new ones
        assert dynamodb.scan(TableName=aws.table_name)["Items"] == []
        for url in (aws.refresh_queue_url, aws.revoke_queue_url, aws.revoke_dlq_url):
            counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            assert counts["ApproximateNumberOfMessages"] == "0", url
            assert counts["ApproximateNumberOfMessagesNotVisible"] == "0", url
            assert counts["ApproximateNumberOfMessagesDelayed"] == "0", url


def test_an_update_expression_checked_once_is_still_refused_where_dynamodb_refuses_it(
    aws: LocalResources,
) -> None:
    # moto checks an expression's shape once per distinct expression and attribute names
    # (tests/support/moto_stack.py): what DynamoDB refuses is refused on every write.
    dynamodb = boto3.client("dynamodb", region_name=aws.region)
    key = {"pk": {"S": "SHAPE#1"}, "sk": {"S": "X"}}
    values = {":v": {"S": "v"}}

    def update(expression: str, names: dict[str, str]) -> str:
        try:
            dynamodb.update_item(
                TableName=aws.table_name,
                Key=key,
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except dynamodb.exceptions.ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "ok"

    for _ in range(2):
        assert update("SET #a = :v, #b = :v", {"#a": "one", "#b": "two"}) == "ok"
        # The same expression naming one attribute twice: a path set twice.
        assert update("SET #a = :v, #b = :v", {"#a": "one", "#b": "one"}) == "ValidationException"
        assert update("SET #a = :v SET #b = :v", {"#a": "one", "#b": "two"}) == "ValidationException"
        assert update("SET #a = :v, #b = :v REMOVE #a", {"#a": "one", "#b": "two"}) == "ValidationException"
    item = dynamodb.get_item(TableName=aws.table_name, Key=key)["Item"]
    assert item["one"] == item["two"] == {"S": "v"}


def test_each_test_starts_moto_with_the_same_routes_not_the_last_tests_too(aws_env: None) -> None:
    # mock_aws(reset=False) adds its routes for the requests library at every start; the stack
    # removes them when the mock stops, so a worker's hundredth test routes what its first did.
    counts = []
    for _ in range(3):
        with in_process_stack("us-east-1"):
            counts.append(len(responses_mock.registered()))
    assert counts[0] > 0 and counts == [counts[0]] * 3
    assert responses_mock.registered() == []
