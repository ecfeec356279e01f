"""Every alarm watches a metric that is published, under exactly the dimensions it is published with.

CloudWatch finds an alarm's data by namespace, metric name and the *whole* set of dimensions: an
alarm naming one dimension too few or too many watches a metric nobody publishes, and with
``TreatMissingData: notBreaching`` it then stays OK forever, whatever fails. So each alarm is
checked here against the dimension sets AWS documents for its namespace (or, for the stack's own
metrics, against what Powertools actually writes), in every branch of the template's conditions
that changes an alarm (which bus the uninstall rule is on), and as the local stack creates it from
template.yaml with the conditions and references resolved.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import boto3
import moto
import pytest

from devstack.resources import ROOT, LocalResources, create_resources, load_template, resources_of_type
from tests.support.translate import of_type, translate

Dimensions = frozenset[str]

# AWS/Lambda: Lambda Developer Guide, "Types of metrics for Lambda functions" and "Viewing metrics
# for Lambda functions": per function (FunctionName), per version or alias (FunctionName,
# Resource), per executed version of an alias (FunctionName, Resource, ExecutedVersion).
LAMBDA: set[Dimensions] = {
    frozenset({"FunctionName"}),
    frozenset({"FunctionName", "Resource"}),
    frozenset({"FunctionName", "Resource", "ExecutedVersion"}),
}
# AWS/SQS: SQS Developer Guide, "Available CloudWatch metrics for Amazon SQS": QueueName is the
# only dimension SQS publishes.
SQS: set[Dimensions] = {frozenset({"QueueName"})}
# AWS/ApiGateway for an HTTP API: API Gateway Developer Guide, "Monitor CloudWatch metrics for
# HTTP APIs in API Gateway": ApiId, and ApiId + Stage. (ApiId, Method, Resource, Stage only with
# detailed metrics, which this stack does not turn on; 4XXError/5XXError are REST API names.)
HTTP_API: set[Dimensions] = {frozenset({"ApiId"}), frozenset({"ApiId", "Stage"})}

PUBLISHED: dict[tuple[str, str], set[Dimensions]] = {
    **{("AWS/Lambda", m): LAMBDA for m in ("Errors", "Throttles", "Duration", "Invocations")},
    **{
        ("AWS/SQS", m): SQS
        for m in (
            "ApproximateAgeOfOldestMessage",
            "ApproximateNumberOfMessagesVisible",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
            "NumberOfMessagesSent",
        )
    },
    **{
        ("AWS/ApiGateway", m): HTTP_API
        for m in ("4xx", "5xx", "Count", "Latency", "IntegrationLatency", "DataProcessed")
    },
}


def event_rule_dimensions(bus: str) -> Dimensions:
    """AWS/Events, per rule: EventBridge User Guide, "Monitoring Amazon EventBridge": a rule on the
    default bus is published with RuleName only, a rule on a custom bus with EventBusName and
    RuleName (and not with RuleName alone)."""
    return frozenset({"RuleName"}) if bus == "default" else frozenset({"EventBusName", "RuleName"})


EVENT_RULE_METRICS = {"FailedInvocations", "Invocations", "TriggeredRules", "MatchedEvents"}

# The branches of the template's conditions that change an alarm: which bus the uninstall rule is on.
BUSES: dict[str, dict[str, str]] = {
    "the default bus": {},
    "the app's own custom bus (UninstallEventBusName)": {"UninstallEventBusName": "apps-bus"},
    "a bus of the stack's own (CreateEventBus)": {"CreateEventBus": "true"},
    "a bus of the stack's own, UninstallEventBusName set too": {
        "CreateEventBus": "true",
        "UninstallEventBusName": "apps-bus",
    },
}


def _per_bus() -> list[Any]:
    # Both checks of a branch read one stack (``_alarms_created`` keeps it per process): under
    # xdist they run on one worker, so each branch's stack is created once, not twice.
    return [
        pytest.param(parameters, id=name, marks=pytest.mark.xdist_group(f"alarms-{n}"))
        for n, (name, parameters) in enumerate(BUSES.items())
    ]


def _alarms_created(parameters: Mapping[str, str]) -> tuple[LocalResources, dict[str, dict[str, Any]]]:
    """The local stack made from template.yaml with ``parameters``: its resources, and its alarms as
    CloudWatch holds them (conditions, references and !Sub resolved), by logical id."""
    return _created(tuple(sorted(parameters.items())))


@cache
def _created(parameters: tuple[tuple[str, str], ...]) -> tuple[LocalResources, dict[str, dict[str, Any]]]:
    with moto.mock_aws():
        resources = create_resources(boto3.Session(region_name="us-east-1"), parameters=dict(parameters))
        pages = boto3.client("cloudwatch").get_paginator("describe_alarms").paginate()
        described = [alarm for page in pages for alarm in page["MetricAlarms"]]
    prefix = f"{resources.stack_name}-"
    return resources, {alarm["AlarmName"].removeprefix(prefix): alarm for alarm in described}


@pytest.fixture(scope="module")
def emitted() -> dict[str, Any]:
    """What the functions' Powertools Metrics writes (its EMF blob) with a deployed function's
    environment: the namespace, the dimension set and the dimensions' values."""
    template = load_template()
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POWERTOOLS_")}
    environment["POWERTOOLS_SERVICE_NAME"] = "ucoauth-probe-stack"
    environment["POWERTOOLS_METRICS_NAMESPACE"] = variables["POWERTOOLS_METRICS_NAMESPACE"]
    environment["PYTHONPATH"] = str(ROOT / "layers" / "ucoauth")
    code = (
        "import json\n"
        "from ucoauth.base.observability import metrics\n"
        "metrics.add_metric(name='Probe', unit='Count', value=1)\n"
        "print(json.dumps(metrics.serialize_metric_set()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=60, check=True
    )
    blob: dict[str, Any] = json.loads(result.stdout)
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    (dimension_set,) = directive["Dimensions"]
    return {
        "namespace": directive["Namespace"],
        "dimensions": frozenset(dimension_set),
        "values": {name: blob[name] for name in dimension_set},
    }


def _metrics_the_code_emits() -> set[str]:
    """Every metric name the package and the handlers pass to ``metrics.add_metric`` as a literal."""
    package = ROOT / "layers" / "ucoauth" / "ucoauth"
    sources = [*package.rglob("*.py"), *(ROOT / "functions").glob("*/app.py")]
    names: set[str] = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_metric":
                for keyword in node.keywords:
                    if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                        names.add(str(keyword.value.value))
    return names


def _dimensions(alarm: Mapping[str, Any]) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}


def test_cloudformation_receives_the_alarms_as_written() -> None:
    # The SAM transform passes AWS::CloudWatch::Alarm through: what is checked below (the source,
    # resolved by the local stack) is what CloudFormation creates.
    assert of_type(translate(), "AWS::CloudWatch::Alarm") == resources_of_type(
        load_template(), "AWS::CloudWatch::Alarm"
    )


@pytest.mark.parametrize("parameters", _per_bus())
def test_every_alarm_names_exactly_the_dimensions_its_metric_is_published_with(
    aws_env: None, emitted: dict[str, Any], parameters: dict[str, str]
) -> None:
    resources, alarms = _alarms_created(parameters)
    template = resources.template
    assert set(alarms) == set(resources_of_type(template, "AWS::CloudWatch::Alarm"))
    rule = resources.resolve(template["Resources"]["UninstallEventRule"]["Properties"])
    functions = {resources.refs[f] for f in resources_of_type(template, "AWS::Serverless::Function")}
    queues = {resources.attributes[f"{q}.QueueName"] for q in resources_of_type(template, "AWS::SQS::Queue")}
    (stack_service,) = {
        resources.function_environment(f)["POWERTOOLS_SERVICE_NAME"]
        for f in resources_of_type(template, "AWS::Serverless::Function")
    }

    # What each alarm's dimensions must be named and hold, by namespace.
    def expected(alarm: Mapping[str, Any]) -> tuple[set[Dimensions], Callable[[dict[str, str]], bool]]:
        namespace, metric = alarm["Namespace"], alarm["MetricName"]
        if namespace == "AWS/Events" and metric in EVENT_RULE_METRICS:
            bus = str(rule.get("EventBusName", "default"))
            return (
                {event_rule_dimensions(bus)},
                lambda d: (
                    d == ({"RuleName": rule["Name"]} | ({} if bus == "default" else {"EventBusName": bus}))
                ),
            )
        if namespace == emitted["namespace"]:
            return {emitted["dimensions"]}, lambda d: d == {"service": stack_service}
        sets = PUBLISHED.get((namespace, metric), set())
        if namespace == "AWS/Lambda":
            return sets, lambda d: d.get("FunctionName") in functions
        if namespace == "AWS/SQS":
            return sets, lambda d: d.get("QueueName") in queues
        if namespace == "AWS/ApiGateway":
            return sets, lambda d: d.get("ApiId") == resources.refs["HttpApi"]
        return sets, lambda d: False

    wrong = {}
    for logical_id, alarm in alarms.items():
        sets, holds = expected(alarm)
        dimensions = _dimensions(alarm)
        if frozenset(dimensions) not in sets or not holds(dimensions):
            wrong[logical_id] = (alarm["Namespace"], alarm["MetricName"], dimensions)
    assert wrong == {}


@pytest.mark.parametrize("parameters", _per_bus())
def test_the_uninstall_rules_alarm_names_the_bus_the_rule_is_on(
    aws_env: None, parameters: dict[str, str]
) -> None:
    resources, alarms = _alarms_created(parameters)
    rule = resources.resolve(resources.template["Resources"]["UninstallEventRule"]["Properties"])
    bus = rule["EventBusName"]
    alarm = alarms["UninstallRuleFailedInvocationsAlarm"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Events", "FailedInvocations")
    expected = {"RuleName": rule["Name"]} | ({} if bus == "default" else {"EventBusName": bus})
    assert _dimensions(alarm) == expected


def test_the_stacks_own_metrics_are_what_powertools_writes(emitted: dict[str, Any]) -> None:
    template = load_template()
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    # One dimension, service, holding POWERTOOLS_SERVICE_NAME; the namespace the template names.
    assert emitted["dimensions"] == frozenset({"service"})
    assert emitted["values"] == {"service": "ucoauth-probe-stack"}
    assert emitted["namespace"] == variables["POWERTOOLS_METRICS_NAMESPACE"]
    own = {
        logical_id: alarm["Properties"]
        for logical_id, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items()
        if alarm["Properties"]["Namespace"] == emitted["namespace"]
    }
    assert own
    for logical_id, alarm in own.items():
        assert alarm["Dimensions"] == [{"Name": "service", "Value": variables["POWERTOOLS_SERVICE_NAME"]}], (
            logical_id
        )


def test_every_custom_metric_alarmed_is_one_the_code_emits() -> None:
    emits = _metrics_the_code_emits()
    alarmed = {
        alarm["Properties"]["MetricName"]
        for alarm in resources_of_type(load_template(), "AWS::CloudWatch::Alarm").values()
        if alarm["Properties"]["Namespace"] == "UltraCartOAuth"
    }
    assert alarmed and alarmed <= emits, alarmed - emits


def test_every_aws_metric_alarmed_is_one_aws_documents() -> None:
    for logical_id, alarm in resources_of_type(load_template(), "AWS::CloudWatch::Alarm").items():
        namespace, metric = alarm["Properties"]["Namespace"], alarm["Properties"]["MetricName"]
        if namespace.startswith("AWS/"):
            documented = (namespace, metric) in PUBLISHED or (
                namespace == "AWS/Events" and metric in EVENT_RULE_METRICS
            )
            assert documented, (logical_id, namespace, metric)
