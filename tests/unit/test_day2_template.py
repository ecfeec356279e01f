"""Day-2 deploys: what a failed first deploy leaves behind, what tracing costs, who may use the
schedule's role, and the token route's throttle: read from what CloudFormation receives after
``sam deploy``'s transform (tests/support/translate.py), per parameter value where one matters."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.resources import Route, http_routes, load_template, parameter_values
from tests.support.translate import of_type, translate, walk

TOKEN_ROUTE = Route("GET", "/tokens/{merchant_id}", "TokenApiFunction", "AWS_IAM")


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return translate()


# --------------------------------------------------------------------------------------
# A failed first deploy leaves nothing behind; a deleted or replaced stack keeps the data
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("logical_id", ["InstallationsTable", "TokenKey"])
def test_the_table_and_the_key_outlive_the_stack_but_not_a_failed_create(
    cfn: dict[str, Any], logical_id: str
) -> None:
    resource = cfn["Resources"][logical_id]
    # Retained when the stack is deleted or the resource replaced, deleted when the stack's first
    # create rolls back (nothing was ever stored in them).
    assert resource["DeletionPolicy"] == "RetainExceptOnCreate"
    # UpdateReplacePolicy takes no RetainExceptOnCreate: a replacement keeps the old one.
    assert resource["UpdateReplacePolicy"] == "Retain"


def test_no_resource_is_left_behind_by_a_rolled_back_first_deploy(cfn: dict[str, Any]) -> None:
    assert {
        logical_id: resource["DeletionPolicy"]
        for logical_id, resource in cfn["Resources"].items()
        if resource.get("DeletionPolicy") == "Retain"
    } == {}


# --------------------------------------------------------------------------------------
# Tracing: off unless asked for, and then with the rights it needs
# --------------------------------------------------------------------------------------
def _when(value: Any, tracing: bool) -> Any:
    """``value`` with the template's ``TracingActive`` conditions decided (the roles the template
    declares itself name SAM's X-Ray policy under that condition)."""
    if isinstance(value, dict) and list(value) == ["Fn::If"] and value["Fn::If"][0] == "TracingActive":
        return _when(value["Fn::If"][1 if tracing else 2], tracing)
    return value


def _xray_rights(role: dict[str, Any], *, tracing: bool) -> list[Any]:
    """Every managed policy or statement of a role that lets it write to X-Ray."""
    arns = [_when(arn, tracing) for arn in role["Properties"].get("ManagedPolicyArns", [])]
    found = [arn for arn in arns if arn != {"Ref": "AWS::NoValue"} and "xray" in str(arn).lower()]
    found += [
        n
        for n in walk(role["Properties"].get("Policies", []))
        if isinstance(n, str) and n.startswith("xray:")
    ]
    return found


def test_tracing_is_a_parameter_off_by_default() -> None:
    spec = load_template()["Parameters"]["TracingMode"]
    assert spec["AllowedValues"] == ["Disabled", "Active"]
    assert spec["Default"] == "Disabled"
    assert "subsegment" in spec["Description"]  # says why it is off
    with pytest.raises(ValueError, match="TracingMode"):
        parameter_values(load_template(), parameters={"TracingMode": "PassThrough"})


def test_without_tracing_no_function_traces_and_no_role_may_write_to_xray() -> None:
    cfn = translate(parameters={"TracingMode": "Disabled"})
    functions = of_type(cfn, "AWS::Lambda::Function")
    assert len(functions) == 9
    assert {f: p["Properties"].get("TracingConfig") for f, p in functions.items()} == dict.fromkeys(functions)
    roles = of_type(cfn, "AWS::IAM::Role")
    assert roles
    assert {
        r: _xray_rights(role, tracing=False) for r, role in roles.items() if _xray_rights(role, tracing=False)
    } == {}


def test_with_tracing_every_function_traces_and_may_write_to_xray() -> None:
    cfn = translate(parameters={"TracingMode": "Active"})
    functions = of_type(cfn, "AWS::Lambda::Function")
    for logical_id, function in functions.items():
        assert function["Properties"]["TracingConfig"] == {"Mode": {"Ref": "TracingMode"}}, logical_id
        role = cfn["Resources"][function["Properties"]["Role"]["Fn::GetAtt"][0]]
        assert _xray_rights(role, tracing=True), logical_id


# --------------------------------------------------------------------------------------
# The schedule's role: only EventBridge Scheduler acting for this account may assume it
# --------------------------------------------------------------------------------------
def test_only_the_stacks_account_schedules_may_assume_the_schedule_role(cfn: dict[str, Any]) -> None:
    (schedule,) = of_type(cfn, "AWS::Scheduler::Schedule").values()
    role_id = schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]
    role = cfn["Resources"][role_id]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow"
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    # The confused-deputy guard: a schedule of another account cannot make Scheduler use this role.
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    # And the role may do what the schedule does, nothing else: invoke the planner, dead-letter a tick.
    granted = {
        (statement["Action"], str(statement["Resource"]))
        for policy in role["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Allow"
    }
    assert granted == {
        ("lambda:InvokeFunction", str({"Fn::GetAtt": ["RefreshPlannerFunction", "Arn"]})),
        ("sqs:SendMessage", str({"Fn::GetAtt": ["SchedulerDeadLetterQueue", "Arn"]})),
    }
    assert schedule["Properties"]["Target"]["Arn"] == {"Fn::GetAtt": ["RefreshPlannerFunction", "Arn"]}


# --------------------------------------------------------------------------------------
# The token route's throttle is the operator's to set
# --------------------------------------------------------------------------------------
def test_the_token_routes_throttle_is_set_by_parameters(cfn: dict[str, Any]) -> None:
    assert TOKEN_ROUTE in http_routes(load_template())
    (stage,) = of_type(cfn, "AWS::ApiGatewayV2::Stage").values()
    route_key = f"{TOKEN_ROUTE.method} {TOKEN_ROUTE.path}"
    assert stage["Properties"]["RouteSettings"] == {
        route_key: {
            "ThrottlingBurstLimit": {"Ref": "TokenApiBurstLimit"},
            "ThrottlingRateLimit": {"Ref": "TokenApiRateLimit"},
        }
    }
    parameters = load_template()["Parameters"]
    defaults = stage["Properties"]["DefaultRouteSettings"]
    # By default the token route keeps the limits every route has.
    assert parameters["TokenApiBurstLimit"]["Default"] == defaults["ThrottlingBurstLimit"]
    assert parameters["TokenApiRateLimit"]["Default"] == defaults["ThrottlingRateLimit"]
    for name in ("TokenApiBurstLimit", "TokenApiRateLimit"):
        assert parameters[name]["Type"] == "Number"
        assert parameters[name]["MinValue"] >= 1, name  # 0 would refuse every token request
    # Within what API Gateway allows an account per region (10,000 requests a second, burst 5,000).
    assert parameters["TokenApiRateLimit"]["MaxValue"] <= 10_000
    assert parameters["TokenApiBurstLimit"]["MaxValue"] <= 5_000
