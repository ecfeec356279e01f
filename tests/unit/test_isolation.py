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


def test_each_test_starts_moto_with_the_same_routes_not_the_last_tests_too(aws_env: None) -> None:
    # mock_aws(reset=False) adds its routes for the requests library at every start; the stack
    # removes them when the mock stops, so a worker's hundredth test routes what its first did.
    counts = []
    for _ in range(3):
        with in_process_stack("us-east-1"):
            counts.append(len(responses_mock.registered()))
    assert counts[0] > 0 and counts == [counts[0]] * 3
    assert responses_mock.registered() == []
