"""Deploying beside siblings: what CloudFormation receives after ``sam deploy``'s transform.

Every test here reads template.yaml translated by samtranslator (tests/support/translate.py),
so it asserts on the resources CloudFormation creates (the schedule, the roles, the event
source mappings), not only on the serverless shorthand.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.resources import ROOT, load_template
from tests.support.translate import of_type, translate, walk
from ucoauth.adapters import events as ucoauth_events

OWN_EVENT_SOURCE = "ultracart.oauth"  # what the functions publish (ucoauth.adapters.events.SOURCE)
STACK_NAME = {"Ref": "AWS::StackName"}
# Properties that give a resource its physical name.
NAME_PROPERTIES = (
    "Name",
    "AlarmName",
    "AliasName",
    "FunctionName",
    "LayerName",
    "LogGroupName",
    "QueueName",
    "RoleName",
    "TableName",
    "TopicName",
    "GroupName",
)


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return translate()


def _mentions_stack_name(value: Any) -> bool:
    for node in walk(value):
        if node == STACK_NAME:
            return True
        if isinstance(node, dict) and "Fn::Sub" in node:
            text = node["Fn::Sub"][0] if isinstance(node["Fn::Sub"], list) else node["Fn::Sub"]
            if "${AWS::StackName}" in str(text):
                return True
    return False


def _is_fixed(name: Any) -> bool:
    """A literal name, or one built without the stack name (a Ref to another resource is derived)."""
    if isinstance(name, str):
        return True
    return (
        isinstance(name, dict)
        and ("Fn::Sub" in name or "Fn::Join" in name)
        and not _mentions_stack_name(name)
    )


def _alarms(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: alarm["Properties"]
        for logical_id, alarm in of_type(cfn, "AWS::CloudWatch::Alarm").items()
    }


def _dimension(alarm: dict[str, Any], name: str) -> Any:
    """The value of one dimension; with Dimensions chosen by a condition, the value both choices give."""
    dimensions = alarm.get("Dimensions", [])
    if isinstance(dimensions, dict) and "Fn::If" in dimensions:
        _, chosen, otherwise = dimensions["Fn::If"]
        first, second = _dimension({"Dimensions": chosen}, name), _dimension({"Dimensions": otherwise}, name)
        return first if first == second else None
    values = [d["Value"] for d in dimensions if d["Name"] == name]
    return values[0] if len(values) == 1 else None


# --------------------------------------------------------------------------------------
# 1. A second stack can be created: no fixed physical name
# --------------------------------------------------------------------------------------
def test_every_physical_name_is_derived_from_the_stack(cfn: dict[str, Any]) -> None:
    fixed = {
        f"{logical_id}.{key}": properties[key]
        for logical_id, resource in cfn["Resources"].items()
        for properties in [resource.get("Properties", {})]
        for key in NAME_PROPERTIES
        if key in properties and _is_fixed(properties[key])
    }
    assert fixed == {}


def test_the_planner_schedule_lets_cloudformation_name_it(cfn: dict[str, Any]) -> None:
    (schedule,) = of_type(cfn, "AWS::Scheduler::Schedule").values()
    assert "Name" not in schedule["Properties"]
    assert "GroupName" not in schedule["Properties"]  # the default group, shared by every stack


# --------------------------------------------------------------------------------------
# 2. Low-quota accounts: nothing reserves concurrency; the event sources cap the workers
# --------------------------------------------------------------------------------------
def test_no_function_reserves_concurrency(cfn: dict[str, Any]) -> None:
    functions = of_type(cfn, "AWS::Lambda::Function")
    assert {
        f: p["Properties"].get("ReservedConcurrentExecutions") for f, p in functions.items()
    } == dict.fromkeys(functions)
    mappings = of_type(cfn, "AWS::Lambda::EventSourceMapping").values()
    assert sorted(m["Properties"]["ScalingConfig"]["MaximumConcurrency"] for m in mappings) == [2, 2, 2]


# --------------------------------------------------------------------------------------
# 3. Stages do not revoke each other's merchants
# --------------------------------------------------------------------------------------
def test_the_uninstall_rule_hears_only_the_apps_sources_from_this_account(cfn: dict[str, Any]) -> None:
    parameters = load_template()["Parameters"]
    assert parameters["UninstallEventSources"]["Type"] == "CommaDelimitedList"
    assert OWN_EVENT_SOURCE not in str(parameters["UninstallEventSources"]["Default"]).split(",")
    (rule,) = of_type(cfn, "AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern == {
        "source": {"Ref": "UninstallEventSources"},
        "account": [{"Ref": "AWS::AccountId"}],
        "detail-type": ["App Uninstalled"],
        "detail": {"merchant_id": [{"exists": True}]},
    }


def test_the_stack_refuses_its_own_event_source_as_an_uninstall_source() -> None:
    rules = load_template()["Rules"]
    assertions = [a["Assert"] for rule in rules.values() for a in rule["Assertions"]]
    assert {"Fn::Not": [{"Fn::Contains": [{"Ref": "UninstallEventSources"}, OWN_EVENT_SOURCE]}]} in assertions


def test_a_bus_of_its_own_is_an_option_and_every_bus_reference_follows_it(cfn: dict[str, Any]) -> None:
    template = load_template()
    assert template["Parameters"]["CreateEventBus"]["AllowedValues"] == ["false", "true"]
    assert template["Parameters"]["CreateEventBus"]["Default"] == "false"
    (bus_id,) = of_type(cfn, "AWS::Events::EventBus")
    bus = cfn["Resources"][bus_id]
    assert bus["Condition"] == "CreatesEventBus"
    assert bus["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}"}
    chosen = {"Fn::If": ["CreatesEventBus", {"Ref": bus_id}, {"Ref": "UninstallEventBusName"}]}
    (rule,) = of_type(cfn, "AWS::Events::Rule").values()
    assert rule["Properties"]["EventBusName"] == chosen
    assert (
        cfn["Resources"]["OAuthBrowserFunction"]["Properties"]["Environment"]["Variables"]["EVENT_BUS_NAME"]
        == chosen
    )
    # Nothing names the parameter except through that choice.
    text = json.dumps(cfn["Resources"], sort_keys=True)
    assert text.count(json.dumps({"Ref": "UninstallEventBusName"})) == text.count(
        json.dumps(chosen, sort_keys=True)
    )


def test_publishers_may_put_events_only_on_the_chosen_bus_and_only_as_the_stack(cfn: dict[str, Any]) -> None:
    # Otherwise any of the four publishing functions could put an uninstall with the app's source.
    chosen = {"Fn::If": ["CreatesEventBus", {"Ref": "EventBus"}, {"Ref": "UninstallEventBusName"}]}
    publishers = set()
    for logical_id, role in of_type(cfn, "AWS::IAM::Role").items():
        for node in walk(role):
            if isinstance(node, dict) and "events:PutEvents" in str(node.get("Action")):
                assert node["Action"] == "events:PutEvents"
                assert node["Resource"]["Fn::Sub"][1] == {"eventBusName": chosen}
                assert node["Condition"] == {"StringEquals": {"events:source": OWN_EVENT_SOURCE}}
                publishers.add(logical_id)
    assert publishers == {
        "OAuthBrowserFunctionRole",
        "TokenApiFunctionRole",
        "RefreshWorkerFunctionRole",
        "RevokeWorkerFunctionRole",
        "AdminApiFunctionRole",
        "DeviceWorkerFunctionRole",
    }
    assert OWN_EVENT_SOURCE == ucoauth_events.SOURCE


# --------------------------------------------------------------------------------------
# 4. Stages do not alarm on each other: the metrics' service is the stack
# --------------------------------------------------------------------------------------
def test_the_metrics_service_is_the_stack_and_every_custom_metric_alarm_names_it(cfn: dict[str, Any]) -> None:
    service = load_template()["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    assert service == {"Fn::Sub": "${AWS::StackName}"}
    for function in of_type(cfn, "AWS::Lambda::Function").values():
        assert function["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == service
    custom = {k: a for k, a in _alarms(cfn).items() if a["Namespace"] == "UltraCartOAuth"}
    assert custom
    assert {k: _dimension(a, "service") for k, a in custom.items()} == dict.fromkeys(custom, service)


# --------------------------------------------------------------------------------------
# 5. An alarm for every way the stack can fail silently
# --------------------------------------------------------------------------------------
def _dead_letter_queues(cfn: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for node in walk(cfn["Resources"]):
        if isinstance(node, dict):
            arn = (node.get("RedrivePolicy") or {}).get("deadLetterTargetArn") or (
                node.get("DeadLetterConfig") or {}
            ).get("Arn")
            if isinstance(arn, dict) and "Fn::GetAtt" in arn:
                found.add(arn["Fn::GetAtt"][0])
    return found


def _queue_of(alarm: dict[str, Any]) -> str | None:
    value = _dimension(alarm, "QueueName")
    return value["Fn::GetAtt"][0] if isinstance(value, dict) and "Fn::GetAtt" in value else None


def test_every_function_has_error_and_throttle_alarms(cfn: dict[str, Any]) -> None:
    alarms = _alarms(cfn).values()
    for function in of_type(cfn, "AWS::Lambda::Function"):
        for metric in ("Errors", "Throttles"):
            assert [
                a
                for a in alarms
                if a["Namespace"] == "AWS/Lambda"
                and a["MetricName"] == metric
                and _dimension(a, "FunctionName") == {"Ref": function}
            ], f"{function} has no {metric} alarm"


def test_every_queue_is_alarmed_work_queues_on_age_dead_letter_queues_on_depth(cfn: dict[str, Any]) -> None:
    dead_letter = _dead_letter_queues(cfn)
    alarmed = {(_queue_of(a), a["MetricName"]) for a in _alarms(cfn).values() if a["Namespace"] == "AWS/SQS"}
    queues = set(of_type(cfn, "AWS::SQS::Queue"))
    assert dead_letter < queues
    expected = {
        (q, "ApproximateNumberOfMessagesVisible" if q in dead_letter else "ApproximateAgeOfOldestMessage")
        for q in queues
    }
    assert expected <= alarmed


def test_every_rule_target_has_a_dead_letter_queue_retries_and_a_failed_invocations_alarm(
    cfn: dict[str, Any],
) -> None:
    alarms = _alarms(cfn).values()
    for logical_id, rule in of_type(cfn, "AWS::Events::Rule").items():
        for target in rule["Properties"]["Targets"]:
            assert "Arn" in target["DeadLetterConfig"], logical_id
            assert set(target["RetryPolicy"]) == {"MaximumRetryAttempts", "MaximumEventAgeInSeconds"}
        assert [
            a
            for a in alarms
            if a["Namespace"] == "AWS/Events"
            and a["MetricName"] == "FailedInvocations"
            and _dimension(a, "RuleName") == rule["Properties"]["Name"]
        ], f"{logical_id} has no FailedInvocations alarm"
    for schedule in of_type(cfn, "AWS::Scheduler::Schedule").values():
        assert "Arn" in schedule["Properties"]["Target"]["DeadLetterConfig"]


def test_the_rules_dead_letter_queue_accepts_only_that_rule(cfn: dict[str, Any]) -> None:
    (rule_id,) = of_type(cfn, "AWS::Events::Rule")
    (target,) = cfn["Resources"][rule_id]["Properties"]["Targets"]
    dlq = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    policies = [
        p["Properties"]
        for p in of_type(cfn, "AWS::SQS::QueuePolicy").values()
        if {"Ref": dlq} in p["Properties"]["Queues"]
    ]
    (statement,) = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]}}}


def test_the_http_api_alarms_on_5xx(cfn: dict[str, Any]) -> None:
    (api,) = of_type(cfn, "AWS::ApiGatewayV2::Api")
    assert [
        a
        for a in _alarms(cfn).values()
        if a["Namespace"] == "AWS/ApiGateway"
        and a["MetricName"] == "5xx"
        and _dimension(a, "ApiId") == {"Ref": api}
    ]


def test_every_alarm_notifies_the_topic_when_set_and_has_no_fixed_name(cfn: dict[str, Any]) -> None:
    notify = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for logical_id, alarm in _alarms(cfn).items():
        assert alarm["AlarmActions"] == notify, logical_id
        assert alarm["OKActions"] == notify, logical_id
        assert "AlarmName" not in alarm or _mentions_stack_name(alarm["AlarmName"]), logical_id


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.M | re.S)
    assert match, title
    return match.group(1)


def _table_first_column(section: str) -> list[str]:
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [row.split("|")[1].strip() for row in rows[2:]]


# The README and the reference pages it links, which were sections of it: an alarm is named in
# the runbook's table and nowhere else among them.
USER_GUIDE = (
    "README.md",
    "docs/CONFIGURATION.md",
    "docs/TOKENS.md",
    "docs/MERCHANT_PAGES.md",
    "docs/DEVICE_FLOW.md",
    "docs/OPERATING.md",
    "docs/RUNBOOK.md",
)


def test_one_runbook_table_covers_every_alarm(cfn: dict[str, Any]) -> None:
    runbook = (ROOT / "docs" / "RUNBOOK.md").read_text()
    assert runbook.startswith("# Runbook: alarms\n")
    header = next(line for line in runbook.splitlines() if line.startswith("|"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["alarm", "what it means", "first action"]
    named = [name for cell in _table_first_column(runbook) for name in re.findall(r"`(\w+)`", cell)]
    assert sorted(named) == sorted(_alarms(cfn))
    guide = "".join((ROOT / page).read_text() for page in USER_GUIDE)
    assert sum(guide.count(f"`{name}`") for name in _alarms(cfn)) == len(named), (
        "alarms named outside the runbook"
    )


# --------------------------------------------------------------------------------------
# 6. The public functions touch only their own items
# --------------------------------------------------------------------------------------
PUBLIC_ITEM_RIGHTS: dict[str, dict[str, set[str]]] = {
    "OAuthBrowserFunction": {
        "STATE#*": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"},
        "MERCHANT#*": {"dynamodb:UpdateItem"},
        "BUDGET#*": {"dynamodb:UpdateItem"},
        "RECEIPT#*": {"dynamodb:GetItem", "dynamodb:PutItem"},
        "SESSION#*": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
    },
    "UninstallWebhookFunction": {"WEBHOOK#*": {"dynamodb:GetItem", "dynamodb:PutItem"}},
}


def _statements(role: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for node in walk(role["Properties"]["Policies"]):
        if isinstance(node, dict) and "Effect" in node and "Action" in node:
            yield node


@pytest.mark.parametrize("function", sorted(PUBLIC_ITEM_RIGHTS))
def test_public_roles_touch_the_table_only_under_their_key_prefixes(
    cfn: dict[str, Any], function: str
) -> None:
    role_id = cfn["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    rights: dict[str, set[str]] = {}
    for statement in _statements(cfn["Resources"][role_id]):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if not any(a.startswith("dynamodb:") for a in actions):
            continue
        assert statement["Effect"] == "Allow"
        assert statement["Resource"] == {"Fn::GetAtt": ["InstallationsTable", "Arn"]}
        assert set(statement["Condition"]) == {"ForAllValues:StringLike"}
        prefixes = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
        for prefix in prefixes:
            rights.setdefault(prefix, set()).update(actions)
    assert rights == PUBLIC_ITEM_RIGHTS[function]


# --------------------------------------------------------------------------------------
# 7. Parameter bounds are the settings' bounds
# --------------------------------------------------------------------------------------
def _settings_bounds() -> dict[str, tuple[float, float, float]]:
    """ENV_NAME -> (default, low, high) of every bounded variable the settings declare."""
    from ucoauth.base.settings import SECTIONS

    return {
        variable.name: (variable.default, variable.low, variable.high)
        for section in SECTIONS.values()
        for variable in section.fields.values()
        if variable.low is not None and variable.high is not None
    }


def test_number_parameters_have_exactly_the_bounds_settings_accepts() -> None:
    template = load_template()
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            variables.update(resource["Properties"].get("Environment", {}).get("Variables", {}))
    by_parameter = {v["Ref"]: name for name, v in variables.items() if isinstance(v, dict) and "Ref" in v}
    bounds = _settings_bounds()
    checked = []
    for name, spec in template["Parameters"].items():
        if spec["Type"] != "Number" or name not in by_parameter:
            continue
        default, low, high = bounds[by_parameter[name]]
        assert (spec["Default"], spec.get("MinValue"), spec.get("MaxValue")) == (default, low, high), name
        checked.append(name)
    assert sorted(checked) == [
        "DataKeyCacheSeconds",
        "DueShards",
        "InlineRefreshMarginSeconds",
        "RefreshMinWindowSeconds",
        "RefreshPaceLimit",
        "RefreshPaceWindowSeconds",
        "RefreshTokenLapseSeconds",
        "RevokeRetrySeconds",
        "UltraCartCallbackReserve",
        "UltraCartDailyLimit",
        "UltraCartHourlyLimit",
    ]


def test_the_budget_scope_parameter_allows_exactly_the_scopes_settings_accepts() -> None:
    from ucoauth.base.settings import BUDGET_SCOPES

    spec = load_template()["Parameters"]["UltraCartBudgetScope"]
    assert spec["AllowedValues"] == list(BUDGET_SCOPES)
    assert spec["Default"] == BUDGET_SCOPES[0] == "application"  # today's one budget for the app


@pytest.mark.parametrize(
    ("arn", "accepted"),
    [
        ("", True),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:ultracart/client-AbC123", True),
        ("arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:client_secret-x1Y2z3", True),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:ultracart/client", False),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:*", False),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:client-AbC123 ", False),
    ],
)
def test_the_client_secret_arn_must_be_a_full_arn(arn: str, accepted: bool) -> None:
    spec = load_template()["Parameters"]["UltraCartClientSecretArn"]
    assert bool(re.fullmatch(spec["AllowedPattern"], arn)) is accepted


def test_every_constrained_parameter_says_what_it_accepts() -> None:
    for name, spec in load_template()["Parameters"].items():
        if "AllowedPattern" in spec or "MinLength" in spec:
            assert len(spec.get("ConstraintDescription", "")) > 10, name


# --------------------------------------------------------------------------------------
# 8. The deploy guide
# --------------------------------------------------------------------------------------
def _guided_prompts() -> list[str]:
    """What ``sam deploy --guided`` (the SAM CLI in .venv) asks for this template, in order."""
    from samcli.commands.deploy.auth_utils import auth_per_resource
    from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider

    template = load_template()
    stacks, _ = SamLocalStackProvider.get_stacks(
        str(ROOT / "template.yaml"),
        parameter_overrides={"UltraCartClientId": "client-id"},
        global_parameter_overrides={"AWS::Region": "us-east-1"},
    )
    unauthenticated = [
        f"`{name}` has no authentication. Is this okay?" for name, ok in auth_per_resource(stacks) if not ok
    ]
    return [
        "Stack Name",
        "AWS Region",
        *(f"Parameter `{name}`" for name in template["Parameters"]),
        "Confirm changes before deploy",
        "Allow SAM CLI IAM role creation",
        "Disable rollback",
        *unauthenticated,
        "Save arguments to configuration file",
        "SAM configuration file",
        "SAM configuration environment",
        # then, with "Confirm changes before deploy", once the changeset is shown:
        "Deploy this changeset?",
    ]


def test_the_readme_lists_exactly_what_sam_deploy_guided_asks() -> None:
    deploy = _readme_section("Deploy")
    from samcli import __version__ as sam_cli_version

    assert (
        f"SAM CLI {'.'.join(sam_cli_version.split('.')[:2])}" in deploy
    )  # the version the table was read from
    assert _table_first_column(deploy) == _guided_prompts()
    # The authentication question is asked per unauthenticated route: none here, and the guide says so.
    assert not [row for row in _table_first_column(deploy) if "has no authentication" in row]
    assert "never asks it here" in deploy


def test_the_readme_deploy_section_names_prerequisites_quotas_and_the_webhook_secret_format() -> None:
    deploy = _readme_section("Deploy")
    for needed in (
        "python3.13",
        ".venv/bin",
        "credentials",
        "AlarmTopicArn",
        "UninstallEventSources",
        "concurrency",
        "whsec_",
        "32",
    ):
        assert needed in deploy, needed


def test_every_samconfig_profile_deploys_without_failing_on_an_empty_changeset() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    profiles = {
        name: body["deploy"]["parameters"]
        for name, body in config.items()
        if isinstance(body, dict) and "deploy" in body
    }
    assert set(profiles) == {"default", "prod"}
    assert {name: p.get("fail_on_empty_changeset") for name, p in profiles.items()} == dict.fromkeys(
        profiles, False
    )


def test_the_translated_template_is_what_the_source_says(cfn: dict[str, Any]) -> None:
    # Sanity: the helper translates this repository's template, functions and all.
    assert set(of_type(cfn, "AWS::Lambda::Function")) == {
        "OAuthBrowserFunction",
        "TokenApiFunction",
        "UninstallWebhookFunction",
        "RefreshPlannerFunction",
        "RefreshWorkerFunction",
        "RevokeWorkerFunction",
        "AdminApiFunction",
        "DeviceFlowFunction",
        "DeviceWorkerFunction",
    }
    assert Path(ROOT / "template.yaml").is_file()
