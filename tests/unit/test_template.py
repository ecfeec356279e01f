"""template.yaml: lint, security scan and build pass; the contract holds; the local stack is built from it."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
import moto
import pytest

from devstack.resources import (
    ROOT,
    TEMPLATE_PATH,
    FunctionCode,
    LocalResources,
    Route,
    create_resources,
    function_handlers,
    function_timeouts,
    generate_secret_string,
    http_routes,
    load_template,
    parameter_values,
    resources_of_type,
    schedules,
    sqs_event_sources,
)
from ucoauth.adapters.table import ACCOUNT_INDEX, STATUS_INDEX
from ucoauth.base.settings import (
    ACCESS_TOKEN_SECTIONS,
    ENVIRONMENT,
    FUNCTION_SECTIONS,
    GLOBAL_SECTIONS,
    SECTIONS,
    Settings,
    function_variables,
    variables_of,
)
from ucoauth.usecases import admin

BIN = Path(sys.executable).parent
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
FUNCTIONS = {
    "OAuthBrowserFunction": "oauth_browser",
    "TokenApiFunction": "token_api",
    "UninstallWebhookFunction": "uninstall_webhook",
    "RefreshPlannerFunction": "refresh_planner",
    "RefreshWorkerFunction": "refresh_worker",
    "RevokeWorkerFunction": "revoke_worker",
    "AdminApiFunction": "admin_api",
    "DeviceFlowFunction": "device_flow",
    "DeviceWorkerFunction": "device_worker",
}
# docs/ARCHITECTURE.md, "Environment".


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _run(command: list[str], *, timeout: float, env: Mapping[str, str] | None = None) -> str:
    """Run a tool from the repository root; fail the test with its output when it fails."""
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{output[-6000:]}"
    return output


def _tool_env() -> dict[str, str]:
    python313 = sorted(Path.home().glob(".pyenv/versions/3.13*/bin"))
    path = os.pathsep.join([str(BIN), *(str(p) for p in python313), os.environ.get("PATH", "")])
    return {"PATH": path, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}


# --------------------------------------------------------------------------------------
# (a)-(d) the tools
# --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cfn_lint_passes() -> None:
    _run([str(BIN / "cfn-lint"), str(TEMPLATE_PATH)], timeout=180, env=_tool_env())


@pytest.mark.slow
def test_sam_validate_lint_passes() -> None:
    output = _run(
        [str(BIN / "sam"), "validate", "--lint", "--template-file", str(TEMPLATE_PATH)],
        timeout=300,
        env=_tool_env(),
    )
    assert "is a valid SAM Template" in output


@pytest.mark.slow
def test_checkov_passes_and_every_skip_says_why(template: dict[str, Any]) -> None:
    # checkov lives in its own venv (its pins would constrain the project's); make installs it once.
    _run(["make", "-s", "checkov-env"], timeout=900)
    # --skip-download: no call to the Bridgecrew platform; the checks themselves ship with checkov.
    output = _run(
        [
            str(CHECKOV),
            "-f",
            str(TEMPLATE_PATH),
            "--framework",
            "cloudformation",
            "--quiet",
            "--compact",
            "--skip-download",
        ],
        timeout=300,
        env=_tool_env(),
    )
    assert "Failed checks: 0" in output
    for logical_id, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert skip["id"].startswith("CKV"), logical_id
            assert len(skip.get("comment", "")) > 20, f"{logical_id} skips {skip['id']} without a reason"


@pytest.mark.slow
def test_sam_build_packages_the_layer_with_its_dependencies(tmp_path: Path) -> None:
    build_dir = tmp_path / "build"
    _run(
        [
            str(BIN / "sam"),
            "build",
            "--template-file",
            str(TEMPLATE_PATH),
            "--build-dir",
            str(build_dir),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        timeout=900,
        env=_tool_env(),
    )
    layer = build_dir / "SharedLayer" / "python"
    assert (layer / "ucoauth" / "__init__.py").is_file()
    assert (layer / "aws_lambda_powertools").is_dir()
    # Bytecode ships with the layer (it is read-only in Lambda), compiled for python3.13.
    assert list((layer / "ucoauth" / "usecases" / "__pycache__").glob("tokens.cpython-313.pyc"))
    assert list((layer / "aws_lambda_powertools" / "__pycache__").glob("*.cpython-313.pyc"))
    # The arm64 wheel of charset_normalizer, not the build machine's.
    compiled = [p.name for p in (layer / "charset_normalizer").glob("*.so")]
    assert all("aarch64" in name for name in compiled), compiled
    for logical_id in FUNCTIONS:
        assert (build_dir / logical_id / "app.py").is_file()


# --------------------------------------------------------------------------------------
# (e) the contract (README, docs/CONFIGURATION.md, docs/ARCHITECTURE.md)
# --------------------------------------------------------------------------------------
def test_transform_and_runtime(template: dict[str, Any]) -> None:
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    function_globals = template["Globals"]["Function"]
    assert function_globals["Runtime"].startswith("python3")
    assert function_globals["Layers"] == [{"Ref": "SharedLayer"}]
    layer = template["Resources"]["SharedLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == "layers/ucoauth/"


def test_the_http_api_has_exactly_its_routes(template: dict[str, Any]) -> None:
    assert set(http_routes(template)) == {
        Route("GET", "/install", "OAuthBrowserFunction", "NONE"),
        Route("GET", "/oauth/callback", "OAuthBrowserFunction", "NONE"),
        Route("GET", "/installed", "OAuthBrowserFunction", "NONE"),
        # Every path no other route matches gets the browser function's HTML 404 page.
        Route("ANY", "$default", "OAuthBrowserFunction", "NONE"),
        Route("POST", "/webhooks/uninstall", "UninstallWebhookFunction", "NONE"),
        Route("GET", "/tokens/{merchant_id}", "TokenApiFunction", "AWS_IAM"),
        Route("POST", "/install-sessions", "TokenApiFunction", "AWS_IAM"),
        Route("GET", "/admin/installations", "AdminApiFunction", "AWS_IAM"),
        Route("GET", "/admin/installations/{merchant_id}", "AdminApiFunction", "AWS_IAM"),
        Route("POST", "/admin/installations/{merchant_id}/refresh", "AdminApiFunction", "AWS_IAM"),
        Route("POST", "/admin/installations/{merchant_id}/uninstall", "AdminApiFunction", "AWS_IAM"),
        Route("POST", "/admin/dead-letters/{queue}/redrive", "AdminApiFunction", "AWS_IAM"),
        Route("GET", "/admin/stats", "AdminApiFunction", "AWS_IAM"),
        # Any other /admin path is IAM-checked too, and answered with the admin API's JSON 404.
        Route("ANY", "/admin/{proxy+}", "AdminApiFunction", "AWS_IAM"),
        Route("POST", "/device/authorizations", "DeviceFlowFunction", "AWS_IAM"),
        Route("GET", "/device/authorizations/{authorization_id}", "DeviceFlowFunction", "AWS_IAM"),
    }
    assert list(resources_of_type(template, "AWS::Serverless::HttpApi")) == ["HttpApi"]
    assert template["Resources"]["HttpApi"]["Properties"]["Auth"]["EnableIamAuthorizer"] is True
    for function in resources_of_type(template, "AWS::Serverless::Function").values():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                assert event["Properties"]["PayloadFormatVersion"] == "2.0"


def test_functions_are_the_ones_the_architecture_names(template: dict[str, Any]) -> None:
    assert function_handlers(template) == {
        logical_id: FunctionCode(ROOT / "functions" / directory, "app.handler")
        for logical_id, directory in FUNCTIONS.items()
    }


def test_parameters_and_their_defaults(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    assert "Default" not in parameters["UltraCartClientId"]
    assert parameters["UltraCartClientId"]["MinLength"] == 1
    defaults = {name: spec.get("Default") for name, spec in parameters.items()}
    assert defaults["UltraCartBaseUrl"] == "https://secure.ultracart.com/rest/v2"
    assert defaults["OAuthRedirectUri"] == ""
    assert defaults["PostInstallRedirectUrl"] == ""
    assert defaults["UltraCartClientSecretArn"] == ""
    assert defaults["Stage"] == "dev"
    assert defaults["UninstallEventBusName"] == "default"
    assert defaults["CreateEventBus"] == "false"
    assert defaults["UninstallEventSources"] == "com.example.myapp"
    assert defaults["RefreshScheduleRate"] == "rate(1 minute)"
    assert defaults["RefreshPaceLimit"] == 10
    assert defaults["RefreshPaceWindowSeconds"] == 60
    assert defaults["InlineRefreshMarginSeconds"] == 60
    assert defaults["RefreshMinWindowSeconds"] == 240
    assert defaults["DueShards"] == 8
    assert defaults["AlarmTopicArn"] == ""
    assert defaults["AppName"] == "Your UltraCart app"
    assert defaults["AppUrl"] == "" and defaults["SupportUrl"] == ""


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("AppName", "Acme Sync", True),
        ("AppName", "Acme\nSync", False),
        ("AppName", "a" * 81, False),
        ("AppUrl", "https://app.acme.example/start", True),
        ("AppUrl", "http://app.acme.example/", False),
        ("SupportUrl", "mailto:help@acme.example", True),
        ("SupportUrl", "https://acme.example/help", True),
        ("SupportUrl", "javascript:alert(1)", False),
    ],
)
def test_branding_parameters_are_constrained(
    template: dict[str, Any], name: str, value: str, accepted: bool
) -> None:
    if accepted:
        assert parameter_values(template, parameters={name: value})[name] == value
    else:
        with pytest.raises(ValueError, match=name):
            parameter_values(template, parameters={name: value})


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://secure.ultracart.com/rest/v2", True),
        ("http://127.0.0.1:3001/rest/v2", True),
        ("http://localhost:3001/rest/v2", True),
        ("http://secure.ultracart.com/rest/v2", False),
        ("https://secure.ultracart.com/rest/v2?x=1", False),
        ("ftp://secure.ultracart.com", False),
    ],
)
def test_base_url_is_https_or_loopback(template: dict[str, Any], url: str, accepted: bool) -> None:
    if accepted:
        assert parameter_values(template, parameters={"UltraCartBaseUrl": url})["UltraCartBaseUrl"] == url
    else:
        with pytest.raises(ValueError, match="UltraCartBaseUrl"):
            parameter_values(template, parameters={"UltraCartBaseUrl": url})


def test_every_parameter_and_variable_is_documented(template: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text()
    configuration = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    architecture = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert [name for name in template["Parameters"] if f"`{name}`" not in readme] == []
    assert [name for name in template["Parameters"] if f"`{name}`" not in configuration] == []
    assert [name for name in ENVIRONMENT if f"`{name}" not in architecture] == []
    assert [name for name in ENVIRONMENT if f"`{name}" not in configuration] == []


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the first table under ``heading`` (header and separator rows left out)."""
    text = markdown.split(heading, 1)[1]
    rows = []
    started = False
    for line in text.splitlines():
        if line.startswith("|"):
            started = True
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif started:
            break
    return rows[2:]


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_every_environment_variable_is_described_and_each_functions_listed() -> None:
    configuration = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    architecture = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    # Each variable has a row of its own meaning in the architecture's variable table.
    described = {n for row in _table_rows(architecture, "### Variables") for n in _names(row[0])}
    assert set(ENVIRONMENT) - described == set()
    assert all(row[1] for row in _table_rows(architecture, "### Variables"))
    # The sections, and which functions use which, as ucoauth.base.settings declares them.
    sections = {row[0].strip("`"): _names(row[1]) for row in _table_rows(architecture, "### Sections")}
    assert sections == {name: list(section.variables) for name, section in SECTIONS.items()}
    per_function = _table_rows(architecture, "### Environment variables per function")
    assert {row[0].strip("`"): tuple(_names(row[1])) for row in per_function[: len(FUNCTIONS)]} == (
        FUNCTION_SECTIONS
    )
    assert tuple(_names(per_function[len(FUNCTIONS)][1])) == ACCESS_TOKEN_SECTIONS
    # The configuration page's table: each function's own variables (besides the core ones).
    core = set(variables_of(GLOBAL_SECTIONS))
    rows = _table_rows(configuration, "## Environment variables per function")
    listed = {row[0].strip("`"): set(_names(row[1])) for row in rows[: len(FUNCTIONS)]}
    assert listed == {f: set(function_variables(f)) - core for f in FUNCTIONS}
    assert set(_names(rows[len(FUNCTIONS)][1])) == set(variables_of(ACCESS_TOKEN_SECTIONS)) - core


def test_settings_read_only_declared_variables(aws: LocalResources) -> None:
    valid = {**aws.every_function_environment(), "AWS_REGION": aws.region}
    read: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            read.add(key)
            return super().get(key, default)

    for section in SECTIONS.values():
        section.parse(Recording(valid))
    # AWS_REGION is Lambda's own (AWS_DEFAULT_REGION is read only when it is missing).
    assert read - set(ENVIRONMENT) == {"AWS_REGION"}
    assert set(ENVIRONMENT) - read == {n for n in ENVIRONMENT if n.startswith("POWERTOOLS_")}


def test_globals_declare_exactly_the_core_settings(template: dict[str, Any]) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert len(set(ENVIRONMENT)) == len(ENVIRONMENT)
    assert set(variables) == set(variables_of(GLOBAL_SECTIONS))
    assert variables["POWERTOOLS_LOGGER_LOG_EVENT"] == "false"
    assert variables["POWERTOOLS_SERVICE_NAME"] == {"Fn::Sub": "${AWS::StackName}"}
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "UltraCartOAuth"


@pytest.mark.parametrize("logical_id", list(FUNCTIONS))
def test_each_function_gets_exactly_its_sections_variables(template: dict[str, Any], logical_id: str) -> None:
    shared = template["Globals"]["Function"]["Environment"]["Variables"]
    own = template["Resources"][logical_id]["Properties"].get("Environment", {}).get("Variables", {})
    assert not set(shared) & set(own), "a function repeats a Globals variable"
    assert {*shared, *own} == set(function_variables(logical_id))
    assert set(FUNCTION_SECTIONS[logical_id]) >= set(GLOBAL_SECTIONS)


def test_the_declared_functions_are_the_templates() -> None:
    assert set(FUNCTION_SECTIONS) == set(FUNCTIONS)


def test_only_the_browser_gets_the_redirect_uri_and_only_the_webhook_the_secret(
    template: dict[str, Any],
) -> None:
    for logical_id in FUNCTIONS:
        own = template["Resources"][logical_id]["Properties"].get("Environment", {}).get("Variables", {})
        # The browser's callback, and the install links the token API's POST /install-sessions
        # answers (GET /install next to the callback, so the state cookie comes back to it).
        assert ("OAUTH_REDIRECT_URI" in own) == (logical_id in ("OAuthBrowserFunction", "TokenApiFunction"))
        assert ("WEBHOOK_SECRET_ARN" in own) == (logical_id == "UninstallWebhookFunction")
        assert ("REFRESH_DEAD_LETTER_QUEUE_URL" in own) == (logical_id == "AdminApiFunction")
    browser = template["Resources"]["OAuthBrowserFunction"]["Properties"]["Environment"]["Variables"]
    assert browser["OAUTH_REDIRECT_URI"] == {"Ref": "OAuthRedirectUri"}


def test_table_keys_index_and_ttl(template: dict[str, Any]) -> None:
    table = template["Resources"]["InstallationsTable"]["Properties"]
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    index, by_status, by_account = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "DueIndex"
    assert index["KeySchema"] == [
        {"AttributeName": "due_shard", "KeyType": "HASH"},
        {"AttributeName": "due_at", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    # The admin API's listing: what a listed item shows, never the tokens, recovery or lease.
    assert by_status["IndexName"] == STATUS_INDEX
    assert by_status["KeySchema"] == [
        {"AttributeName": "status", "KeyType": "HASH"},
        {"AttributeName": "merchant_id", "KeyType": "RANGE"},
    ]
    projected = by_status["Projection"]["NonKeyAttributes"]
    assert by_status["Projection"]["ProjectionType"] == "INCLUDE"
    assert {"tokens", "recovery", "lease_owner", "lease_expires_at"}.isdisjoint(projected)
    assert {"status", "merchant_id", *projected} == {
        name for name in admin._LISTED if not name.startswith("#")
    } | {"status"}
    # The admin API's listing by the app's account: the same attributes, the account as its key.
    assert by_account["IndexName"] == ACCOUNT_INDEX
    assert by_account["KeySchema"] == [
        {"AttributeName": "app_account_id", "KeyType": "HASH"},
        {"AttributeName": "merchant_id", "KeyType": "RANGE"},
    ]
    assert by_account["Projection"]["ProjectionType"] == "INCLUDE"
    assert {"app_account_id", "merchant_id", *by_account["Projection"]["NonKeyAttributes"]} == {
        name.lstrip("#") for name in admin._LISTED_BY_ACCOUNT
    }
    assert table["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"


def test_the_key_requires_the_merchant_encryption_context(template: dict[str, Any]) -> None:
    key = template["Resources"]["TokenKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    denials = [s for s in key["KeyPolicy"]["Statement"] if s["Effect"] == "Deny"]
    assert any(
        {"kms:Encrypt", "kms:Decrypt"} <= set(s["Action"])
        and s["Condition"] == {"Null": {"kms:EncryptionContext:merchant_id": "true"}}
        for s in denials
    )


def test_device_codes_have_their_own_key_requiring_the_authorization_context(
    template: dict[str, Any],
) -> None:
    key = template["Resources"]["DeviceCodeKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    denials = [s for s in key["KeyPolicy"]["Statement"] if s["Effect"] == "Deny"]
    assert any(
        {"kms:Encrypt", "kms:Decrypt"} <= set(s["Action"])
        and s["Condition"] == {"Null": {"kms:EncryptionContext:authorization_id": "true"}}
        for s in denials
    )
    for function in ("DeviceFlowFunction", "DeviceWorkerFunction"):
        variables = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert variables["DEVICE_KEY_ID"] == {"Fn::GetAtt": ["DeviceCodeKey", "Arn"]}
        assert variables["DEVICE_SCOPE"] == {"Ref": "DeviceScope"}
        assert variables["DEVICE_QUEUE_URL"] == {"Ref": "DeviceQueue"}


def test_every_worker_is_fed_by_sqs(template: dict[str, Any]) -> None:
    sources = sqs_event_sources(template)
    assert {name: source.queue_logical_id for name, source in sources.items()} == {
        "RefreshWorkerFunction": "RefreshQueue",
        "RevokeWorkerFunction": "RevokeQueue",
        "DeviceWorkerFunction": "DeviceQueue",
    }
    assert all(source.report_batch_item_failures for source in sources.values())
    assert sources["RefreshWorkerFunction"].batch_size == 5
    assert sources["RefreshWorkerFunction"].maximum_concurrency == 2


def test_planner_runs_on_a_schedule_with_retries_and_a_dead_letter_queue(template: dict[str, Any]) -> None:
    (schedule,) = schedules(template)
    assert schedule.logical_id == "RefreshPlannerFunction"
    assert schedule.rate_seconds == 60
    event = template["Resources"]["RefreshPlannerFunction"]["Properties"]["Events"][schedule.event_name]
    assert event["Type"] == "ScheduleV2"
    assert set(event["Properties"]["RetryPolicy"]) == {"MaximumRetryAttempts", "MaximumEventAgeInSeconds"}
    assert event["Properties"]["DeadLetterConfig"] == {
        "Arn": {"Fn::GetAtt": ["SchedulerDeadLetterQueue", "Arn"]}
    }


def test_the_uninstall_rule_targets_the_revoke_queue(template: dict[str, Any]) -> None:
    rule = template["Resources"]["UninstallEventRule"]["Properties"]
    assert rule["EventPattern"] == {
        "source": {"Ref": "UninstallEventSources"},
        "account": [{"Ref": "AWS::AccountId"}],
        "detail-type": ["App Uninstalled"],
        "detail": {"merchant_id": [{"exists": True}]},
    }
    assert [target["Arn"] for target in rule["Targets"]] == [{"Fn::GetAtt": ["RevokeQueue", "Arn"]}]
    assert rule["Targets"][0]["DeadLetterConfig"] == {
        "Arn": {"Fn::GetAtt": ["UninstallRuleDeadLetterQueue", "Arn"]}
    }
    statement = template["Resources"]["RevokeQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == {
        "Fn::GetAtt": ["UninstallEventRule", "Arn"]
    }


def test_the_webhook_secret_is_a_standard_webhooks_secret(template: dict[str, Any]) -> None:
    secret = template["Resources"]["UninstallWebhookSecret"]["Properties"]
    generator = secret["GenerateSecretString"]
    assert generator["PasswordLength"] == 32
    assert generator["ExcludePunctuation"] is True
    assert "SecretStringTemplate" not in generator
    value = generate_secret_string(generator)
    assert len(value) == 32
    assert len(base64.b64decode(value, validate=True)) == 24


def test_every_queue_has_a_dead_letter_queue_and_alarms(template: dict[str, Any]) -> None:
    queues = resources_of_type(template, "AWS::SQS::Queue")
    alarmed = {
        alarm["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values()
        if alarm["Properties"]["Namespace"] == "AWS/SQS"
    }
    dead_letter_queues = {"SchedulerDeadLetterQueue", "UninstallRuleDeadLetterQueue"}
    for logical_id in ("RefreshQueue", "RevokeQueue", "DeviceQueue"):
        redrive = queues[logical_id]["Properties"]["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == 5
        dead_letter_queues.add(redrive["deadLetterTargetArn"]["Fn::GetAtt"][0])
    assert dead_letter_queues | {"RefreshQueue", "RevokeQueue", "DeviceQueue"} == set(queues)
    assert alarmed == set(queues)
    for logical_id in dead_letter_queues:
        assert queues[logical_id]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_queue_visibility_outlasts_six_worker_timeouts(template: dict[str, Any]) -> None:
    timeouts = function_timeouts(template)
    queues = resources_of_type(template, "AWS::SQS::Queue")
    for function, source in sqs_event_sources(template).items():
        visibility = queues[source.queue_logical_id]["Properties"]["VisibilityTimeout"]
        assert visibility >= 6 * timeouts[function], function


def test_domain_failures_are_alarmed(template: dict[str, Any]) -> None:
    metrics = {
        alarm["Properties"]["MetricName"]
        for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values()
        if alarm["Properties"]["Namespace"] == "UltraCartOAuth"
    }
    assert metrics == {
        "TokenRefreshFailed",
        "ReauthorizationRequired",
        "RevokeFailed",
        "EventLost",
        "KeyUnavailable",
        "AppCredentialsRejected",
        "TokensUndecryptable",
        "TokensLost",
        "RefreshBacklog",
    }


def test_the_dashboard_draws_what_operators_watch(template: dict[str, Any]) -> None:
    (dashboard,) = resources_of_type(template, "AWS::CloudWatch::Dashboard").values()
    text = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(re.sub(r"\$\{UltraCartHourlyLimit\}", "900", text))["widgets"]
    drawn = [tuple(m) for w in widgets for m in w["properties"]["metrics"]]
    own = {m[1] for m in drawn if m[0] == "UltraCartOAuth"}
    assert own == {
        "InstallCompleted",
        "InstallationRemoved",
        "TokenRefreshed",
        "TokenRefreshFailed",
        "ReauthorizationRequired",
        "RefreshBacklog",
        "KeyUnavailable",
        "TokensKeptForRecovery",
        "TokensLost",
        "UltraCartBudgetUsed",
    }
    # Every metric drawn is one the code emits, with the stage's own service dimension.
    source = "\n".join(p.read_text() for p in (ROOT / "layers/ucoauth/ucoauth").rglob("*.py"))
    for metric in own:
        assert f'name="{metric}"' in source, metric
    assert all(m[2:] == ("service", "${AWS::StackName}") for m in drawn if m[0] == "UltraCartOAuth")
    functions = set(resources_of_type(template, "AWS::Serverless::Function"))
    for name in ("Errors", "Throttles", "Duration"):
        assert {m[3] for m in drawn if m[:2] == ("AWS/Lambda", name)} == {f"${{{f}}}" for f in functions}
    assert {m[1] for m in drawn if m[0] == "AWS/ApiGateway"} == {"4xx", "5xx"}
    sqs = {(m[1], m[3]) for m in drawn if m[0] == "AWS/SQS"}
    for queue in ("RefreshQueue", "RevokeQueue", "DeviceQueue"):
        assert ("ApproximateNumberOfMessagesVisible", f"${{{queue}.QueueName}}") in sqs
        assert ("ApproximateAgeOfOldestMessage", f"${{{queue}.QueueName}}") in sqs
    url, names = template["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]
    assert (
        url
        == "https://${Console}/cloudwatch/home?region=${AWS::Region}#dashboards/dashboard/${OperationsDashboard}"
    )
    # The console's host differs per partition: China and GovCloud stacks get a working link too.
    assert names["Console"] == {"Fn::FindInMap": ["ConsoleByPartition", {"Ref": "AWS::Partition"}, "Host"]}
    hosts = {k: v["Host"] for k, v in template["Mappings"]["ConsoleByPartition"].items()}
    assert hosts == {
        "aws": "console.aws.amazon.com",
        "aws-cn": "console.amazonaws.cn",
        "aws-us-gov": "console.amazonaws-us-gov.com",
    }


# Each function's rights: tests/unit/test_least_privilege.py (one table, with conditions).


def test_every_function_logs_to_its_own_group_with_retention(template: dict[str, Any]) -> None:
    for logical_id, function in resources_of_type(template, "AWS::Serverless::Function").items():
        group_id = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        group = template["Resources"][group_id]
        assert group["Type"] == "AWS::Logs::LogGroup"
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert logical_id in group["Properties"]["LogGroupName"]["Fn::Sub"]


# --------------------------------------------------------------------------------------
# (f) the local stack is built from the template
# --------------------------------------------------------------------------------------
def _index_shape(indexes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        ({key: index[key] for key in ("IndexName", "KeySchema", "Projection")} for index in indexes),
        key=lambda index: str(index["IndexName"]),
    )


def test_the_local_table_is_the_templates_table(aws: LocalResources, template: dict[str, Any]) -> None:
    declared = template["Resources"]["InstallationsTable"]["Properties"]
    dynamodb = boto3.client("dynamodb")
    table = dynamodb.describe_table(TableName=aws.table_name)["Table"]
    assert table["KeySchema"] == declared["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(declared["AttributeDefinitions"], key=str)
    assert _index_shape(table["GlobalSecondaryIndexes"]) == _index_shape(declared["GlobalSecondaryIndexes"])
    ttl = dynamodb.describe_time_to_live(TableName=aws.table_name)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == declared["TimeToLiveSpecification"]["AttributeName"]


def test_changing_the_template_changes_what_is_created(aws_env: None, template: dict[str, Any]) -> None:
    # Given a template whose table has another sort key and another index name
    changed = copy.deepcopy(template)
    table = changed["Resources"]["InstallationsTable"]["Properties"]
    table["AttributeDefinitions"] = [
        {"AttributeName": "other", "AttributeType": "N"} if a["AttributeName"] == "sk" else a
        for a in table["AttributeDefinitions"]
    ]
    table["KeySchema"][1]["AttributeName"] = "other"
    table["GlobalSecondaryIndexes"][0]["IndexName"] = "OtherIndex"
    with moto.mock_aws():
        # When the local stack is created from it
        resources = create_resources(boto3.Session(region_name="us-east-1"), template=changed)
        described = boto3.client("dynamodb").describe_table(TableName=resources.table_name)["Table"]
    # Then the table follows the template, not a second definition
    assert described["KeySchema"] == table["KeySchema"]
    assert _index_shape(described["GlobalSecondaryIndexes"]) == _index_shape(table["GlobalSecondaryIndexes"])


def test_local_queues_key_and_secret_follow_the_template(
    aws: LocalResources, template: dict[str, Any]
) -> None:
    sqs = boto3.client("sqs")
    declared = template["Resources"]["RefreshQueue"]["Properties"]
    attributes = sqs.get_queue_attributes(QueueUrl=aws.refresh_queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    assert int(attributes["VisibilityTimeout"]) == declared["VisibilityTimeout"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == declared["RedrivePolicy"]["maxReceiveCount"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=aws.refresh_dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]
    assert redrive["deadLetterTargetArn"] == dlq_arn["QueueArn"]

    kms = boto3.client("kms")
    assert kms.get_key_rotation_status(KeyId=aws.key_id)["KeyRotationEnabled"] is True
    policy = json.loads(kms.get_key_policy(KeyId=aws.key_id, PolicyName="default")["Policy"])
    assert any(statement["Effect"] == "Deny" for statement in policy["Statement"])
    aliases = {alias["AliasName"] for alias in kms.list_aliases(KeyId=aws.key_id)["Aliases"]}
    assert aliases == {f"alias/{aws.stack_name}-tokens"}

    secret = boto3.client("secretsmanager").get_secret_value(SecretId=aws.webhook_secret_arn)["SecretString"]
    assert secret == aws.webhook_secret_value
    assert len(base64.b64decode(secret, validate=True)) == 24


def test_uninstall_events_reach_the_revoke_queue_and_published_events_the_observer(
    aws: LocalResources,
) -> None:
    events = boto3.client("events")
    sqs = boto3.client("sqs")
    (app_source,) = aws.parameters["UninstallEventSources"].split(",")
    events.put_events(
        Entries=[
            {
                "Source": app_source,
                "DetailType": "App Uninstalled",
                "Detail": json.dumps({"merchant_id": "DEMO"}),
                "EventBusName": aws.event_bus_name,
            },
            {
                "Source": "ultracart.oauth",
                "DetailType": "Installation Completed",
                "Detail": json.dumps({"merchant_id": "DEMO", "generation": 1}),
                "EventBusName": aws.event_bus_name,
            },
        ]
    )
    revoke = sqs.receive_message(QueueUrl=aws.revoke_queue_url, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["detail"] for m in revoke] == [{"merchant_id": "DEMO"}]
    observed = sqs.receive_message(QueueUrl=aws.events_observer_queue_url, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["detail-type"] for m in observed] == ["Installation Completed"]


def test_function_environment_resolves_every_variable(aws: LocalResources) -> None:
    for logical_id in FUNCTIONS:
        environment = aws.function_environment(logical_id)
        assert set(environment) == set(function_variables(logical_id))
        for name, value in environment.items():
            assert isinstance(value, str), name
            for unresolved in ("'Ref'", "${", "Fn::", "{'"):
                assert unresolved not in value, (name, value)
        Settings.for_function(logical_id, environment)  # its cold start parses
        expected = {
            "TABLE_NAME": aws.table_name,
            "KMS_KEY_ID": aws.key_arn,
            "REFRESH_QUEUE_URL": aws.refresh_queue_url,
            "REVOKE_QUEUE_URL": aws.revoke_queue_url,
            "WEBHOOK_SECRET_ARN": aws.webhook_secret_arn,
            "EVENT_BUS_NAME": aws.event_bus_name,
            "STAGE": "local",
            "POWERTOOLS_SERVICE_NAME": aws.stack_name,
            "OAUTH_REDIRECT_URI": "",
            "DUE_SHARDS": "8",
        }
        for name, value in expected.items():
            if name in environment:
                assert environment[name] == value, (logical_id, name)
    every = aws.every_function_environment()
    assert set(every) == set(ENVIRONMENT)


def test_function_environment_takes_parameters_and_overrides(aws_env: None) -> None:
    with moto.mock_aws():
        resources = create_resources(
            boto3.Session(region_name="us-east-1"),
            parameters={
                "UltraCartClientId": "sandbox-client-id",
                "UltraCartBaseUrl": "http://127.0.0.1:3001/rest/v2",
            },
        )
    environment = resources.function_environment(
        "TokenApiFunction", overrides={"ULTRACART_HOURLY_LIMIT": "2"}
    )
    assert environment["ULTRACART_CLIENT_ID"] == "sandbox-client-id"
    assert environment["ULTRACART_BASE_URL"] == "http://127.0.0.1:3001/rest/v2"
    assert environment["ULTRACART_HOURLY_LIMIT"] == "2"
    with pytest.raises(KeyError):
        resources.function_environment("NoSuchFunction")


def test_bad_parameters_are_refused_like_cloudformation_would(aws_env: None) -> None:
    with moto.mock_aws(), pytest.raises(ValueError, match="DueShards"):
        create_resources(boto3.Session(region_name="us-east-1"), parameters={"DueShards": "0"})
    with moto.mock_aws(), pytest.raises(ValueError, match="RefreshPaceLimit"):
        create_resources(boto3.Session(region_name="us-east-1"), parameters={"RefreshPaceLimit": "100001"})


def test_the_stacks_own_event_source_is_refused_as_an_uninstall_source(aws_env: None) -> None:
    # The template's Rules section: CloudFormation refuses it before creating anything.
    with moto.mock_aws(), pytest.raises(ValueError, match="UninstallSourcesAreNotOurOwn"):
        create_resources(
            boto3.Session(region_name="us-east-1"),
            parameters={"UninstallEventSources": "com.example.myapp,ultracart.oauth"},
        )


@pytest.mark.integration
def test_the_moto_server_gets_the_same_resources(aws_server: LocalResources) -> None:
    # boto3 reaches the server through AWS_ENDPOINT_URL, as the handlers do locally.
    assert aws_server.endpoint_url is not None
    assert os.environ["AWS_ENDPOINT_URL"] == aws_server.endpoint_url
    table = boto3.client("dynamodb").describe_table(TableName=aws_server.table_name)["Table"]
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == [
        "DueIndex",
        "StatusIndex",
        "AccountIndex",
    ]
    environment = aws_server.function_environment("UninstallWebhookFunction")
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=environment["WEBHOOK_SECRET_ARN"])
    assert secret["SecretString"] == aws_server.webhook_secret_value


@pytest.mark.parametrize(
    ("schedule", "latest"),
    [
        # The default planner: a token in use is due 4 minutes before it expires and a read refreshes
        # it inline 60 s before; the alarm must fire inside those 3 minutes, not after them.
        ("rate(1 minute)", 240 - 60),
        # A slower planner needs a longer window anyway (its Description): three of its runs.
        ("rate(5 minutes)", 3 * 300),
    ],
)
def test_the_backlog_alarm_fires_before_a_token_in_use_would_be_refreshed_by_its_reader(
    schedule: str, latest: int
) -> None:
    from devstack.resources import _Resolver, rate_seconds

    template = load_template()
    values = parameter_values(template, parameters={"RefreshScheduleRate": schedule})
    pseudo = {"AWS::StackName": "ucoauth", "AWS::NoValue": ""}
    resolver = _Resolver(template=template, parameters=values, pseudo=pseudo, refs={}, attributes={})
    alarm = resolver.resolve(template["Resources"]["RefreshBacklogAlarm"]["Properties"])
    period, periods = int(alarm["Period"]), int(alarm["EvaluationPeriods"])
    assert alarm["Statistic"] == "Minimum"  # every run in a period left installations behind
    assert int(alarm.get("DatapointsToAlarm", periods)) == periods
    assert period * periods <= latest
    # Each period holds at least one planner run, so a period without one is not a quiet one.
    assert period >= (rate_seconds(schedule) or 0)


def test_a_comma_delimited_list_is_checked_member_by_member_as_cloudformation_does() -> None:
    # CloudFormation trims each member of a CommaDelimitedList and matches AllowedPattern against
    # each one; the local stack does the same.
    hosts = {"Type": "CommaDelimitedList", "Default": "", "AllowedPattern": "^$|^[a-z]+$"}
    template = {"Parameters": {"Hosts": hosts}, "Resources": {}}
    assert parameter_values(template, parameters={"Hosts": "abc, def"})["Hosts"] == "abc, def"
    with pytest.raises(ValueError, match="Hosts"):
        parameter_values(template, parameters={"Hosts": "abc,DEF"})


@pytest.mark.parametrize(
    ("origins", "accepted"),
    [
        ("", True),
        ("https://app.acme.example", True),
        ("https://app.acme.example, http://localhost:3000", True),
        ("https://app.acme.example/return", False),  # a URL, not an origin
        ("javascript:alert(1)", False),
        ("https://app.acme.example,ftp://files.acme.example", False),
    ],
)
def test_install_return_origins_are_refused_at_deploy_as_the_function_would_refuse_them(
    origins: str, accepted: bool
) -> None:
    from ucoauth.base.errors import ConfigurationError
    from ucoauth.base.settings import Settings

    template = load_template()
    env = {"TABLE_NAME": "t", "KMS_KEY_ID": "k", "INSTALL_RETURN_ORIGINS": origins}
    try:
        Settings.from_env(env).section("sessions")
        function_accepts = True
    except ConfigurationError:
        function_accepts = False
    assert function_accepts == accepted
    if accepted:
        parameter_values(template, parameters={"InstallReturnOrigins": origins})
    else:
        with pytest.raises(ValueError, match="InstallReturnOrigins"):
            parameter_values(template, parameters={"InstallReturnOrigins": origins})
