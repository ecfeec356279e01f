"""Create template.yaml's resources in moto (server or in-process), read from the template itself.

Nothing here defines a table, queue, key, secret or rule: every property comes from
``template.yaml``, so the local stack and the tests cannot drift from what is deployed. The
one local-only addition is the *events observer*: an SQS queue (``{stack}-events-observer``)
with a rule that copies every event of source ``ultracart.oauth`` into it, so tests and the
developer can read what the functions published. It does not exist in a deployed stack.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import re
import secrets
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import boto3
import yaml
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_events.client import EventBridgeClient
    from mypy_boto3_kms.client import KMSClient
    from mypy_boto3_secretsmanager.client import SecretsManagerClient
    from mypy_boto3_sqs.client import SQSClient

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
DEFAULT_REGION = "us-east-1"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"
EVENT_SOURCE = "ultracart.oauth"
OBSERVER_NAME = "events-observer"

# Values for parameters the template leaves without a default (required at deploy time), so
# the local stack starts without arguments. They match the local UltraCart sandbox.
LOCAL_PARAMETER_DEFAULTS: Mapping[str, str] = {"UltraCartClientId": "sandbox-client-id"}

# Bounded retries on every client (every AWS client the project builds has bounded retries).
_CLIENT_CONFIG = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30)

# Same alphabet as Secrets Manager's GetRandomPassword.
_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

# CloudFormation properties of AWS::SQS::Queue that are queue attributes of the same name.
_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
)

_INTRINSIC_TAGS = (
    "Base64",
    "Cidr",
    "FindInMap",
    "GetAZs",
    "ImportValue",
    "Join",
    "Select",
    "Split",
    "Sub",
    "Transform",
    "If",
    "Equals",
    "Not",
    "And",
    "Or",
    "ToJsonString",
    "Length",
    "Contains",
)


# --------------------------------------------------------------------------------------
# Reading the template
# --------------------------------------------------------------------------------------
class _TemplateLoader(yaml.SafeLoader):
    """A safe YAML loader that turns CloudFormation short tags into their long form."""


def _construct_node(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    raise yaml.constructor.ConstructorError(None, None, f"unexpected node {node.tag}", node.start_mark)


def _long_form(name: str) -> Callable[[yaml.SafeLoader, yaml.Node], dict[str, Any]]:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        return {name: _construct_node(loader, node)}

    return construct


def _get_att(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    value = _construct_node(loader, node)
    if isinstance(value, str):
        # !GetAtt Resource.Attribute; attribute names may themselves contain dots.
        value = value.split(".", 1)
    return {"Fn::GetAtt": value}


_TemplateLoader.add_constructor("!Ref", _long_form("Ref"))
_TemplateLoader.add_constructor("!Condition", _long_form("Condition"))
_TemplateLoader.add_constructor("!GetAtt", _get_att)
for _tag in _INTRINSIC_TAGS:
    _TemplateLoader.add_constructor(f"!{_tag}", _long_form(f"Fn::{_tag}"))


# Parsed templates by (path, modification time, size): parsing the template takes about 0.2 s,
# and the tests and the local stack read it many times. Callers get a copy they may change.
_PARSED: dict[tuple[str, int, int], bytes] = {}


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """Parse a CloudFormation/SAM template, short tags (``!Ref``, ``!Sub``...) included.

    Each call returns a fresh document (changing it changes nothing else); a file is parsed
    again only when its modification time or size changes.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    cached = _PARSED.get(key)
    if cached is None:
        with path.open(encoding="utf-8") as handle:
            document = yaml.load(handle, Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader subclass
        if not isinstance(document, dict) or "Resources" not in document:
            raise ValueError(f"{path} is not a CloudFormation template")
        cached = pickle.dumps(document, protocol=pickle.HIGHEST_PROTOCOL)
        _PARSED[key] = cached
    copy: dict[str, Any] = pickle.loads(cached)  # noqa: S301 - bytes this function pickled itself
    return copy


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    """Logical id -> resource, for every resource of ``resource_type``, in template order."""
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource.get("Type") == resource_type
    }


def _properties(template: Mapping[str, Any], logical_id: str) -> dict[str, Any]:
    properties: dict[str, Any] = template["Resources"][logical_id].get("Properties", {})
    return properties


def _globals(template: Mapping[str, Any], section: str) -> dict[str, Any]:
    values: dict[str, Any] = template.get("Globals", {}).get(section, {})
    return values


def _logical_id_of(value: Any) -> str:
    """The logical id a ``!Ref X`` / ``!GetAtt X.Attr`` points at."""
    if isinstance(value, dict):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            return str(value["Fn::GetAtt"][0])
    raise ValueError(f"expected a !Ref or !GetAtt to a resource, got {value!r}")


# --------------------------------------------------------------------------------------
# Parameters and intrinsic functions
# --------------------------------------------------------------------------------------
class UnresolvedReferenceError(LookupError):
    """An intrinsic function names something the local stack does not have."""


def stack_name_for(stage: str) -> str:
    """The local stack name for a stage (physical names are ``{stack}-{LogicalId}``)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", stage):
        raise ValueError(f"stage must be lowercase letters, digits and dashes: {stage!r}")
    return f"ucoauth-{stage}"


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parameter_values(
    template: Mapping[str, Any], *, stage: str = "local", parameters: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The template's parameter defaults, overridden by ``parameters``, checked like CloudFormation.

    ``Stage`` is the local stage name: it is outside the deployed AllowedValues on purpose, so a
    local stack never looks like a deployed one.
    """
    given = dict(parameters or {})
    values: dict[str, str] = {}
    for name, spec in template.get("Parameters", {}).items():
        if name in given:
            value = given.pop(name)
        elif name == "Stage":
            values[name] = stage
            continue
        elif "Default" in spec:
            value = _format_value(spec["Default"])
        elif name in LOCAL_PARAMETER_DEFAULTS:
            value = LOCAL_PARAMETER_DEFAULTS[name]
        else:
            raise ValueError(f"parameter {name} has no default: pass it in parameters")
        _check_parameter(name, spec, value)
        values[name] = value
    if given:
        raise ValueError(f"unknown parameters: {sorted(given)}")
    return values


def _check_parameter(name: str, spec: Mapping[str, Any], value: str) -> None:
    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in [_format_value(v) for v in allowed]:
        raise ValueError(f"parameter {name}={value!r} is not one of {allowed}")
    pattern = spec.get("AllowedPattern")
    # CloudFormation matches a CommaDelimitedList's pattern against each member, trimmed.
    members = [m.strip() for m in value.split(",")] if spec.get("Type") == "CommaDelimitedList" else [value]
    if pattern is not None and not all(re.fullmatch(pattern, member) for member in members):
        raise ValueError(f"parameter {name}={value!r} does not match {pattern}")
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        raise ValueError(f"parameter {name} is shorter than {spec['MinLength']}")
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        raise ValueError(f"parameter {name} is longer than {spec['MaxLength']}")
    if spec.get("Type") == "Number":
        number = float(value)
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise ValueError(f"parameter {name} is below {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise ValueError(f"parameter {name} is above {spec['MaxValue']}")


_NO_VALUE = object()
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class _Resolver:
    """Evaluates intrinsic functions against local physical ids and parameter values."""

    template: Mapping[str, Any]
    parameters: Mapping[str, str]
    pseudo: Mapping[str, str]
    refs: Mapping[str, str]
    attributes: Mapping[str, str]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self._ref(str(argument))
            if key == "Condition":
                return self.condition(str(argument))
            if key.startswith("Fn::"):
                return self._function(key, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def resolve_string(self, value: Any) -> str:
        resolved = self.resolve(value)
        if isinstance(resolved, dict | list) or resolved is _NO_VALUE:
            raise UnresolvedReferenceError(f"{value!r} does not resolve to a string")
        return _format_value(resolved)

    def condition(self, name: str) -> bool:
        conditions = self.template.get("Conditions", {})
        if name not in conditions:
            raise UnresolvedReferenceError(f"unknown condition {name}")
        return bool(self.resolve(conditions[name]))

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        spec = self.template.get("Parameters", {}).get(name, {})
        if name in self.parameters and spec.get("Type") == "CommaDelimitedList":
            return [item.strip() for item in self.parameters[name].split(",")]
        for table in (self.parameters, self.pseudo, self.refs):
            if name in table:
                return table[name]
        raise UnresolvedReferenceError(f"!Ref {name} has no local value")

    def _get_att(self, logical_id: str, attribute: str) -> str:
        key = f"{logical_id}.{attribute}"
        if key not in self.attributes:
            raise UnresolvedReferenceError(f"!GetAtt {key} has no local value")
        return self.attributes[key]

    def _sub(self, argument: Any) -> str:
        variables: dict[str, str]
        if isinstance(argument, list):
            text, variables = argument[0], {k: self.resolve_string(v) for k, v in argument[1].items()}
        else:
            text, variables = argument, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return variables[name]
            if "." in name and not name.startswith("AWS::"):
                return self._get_att(*name.split(".", 1))
            return _format_value(self._ref(name))

        return _SUB_VARIABLE.sub(replace, str(text))

    def _function(self, name: str, argument: Any) -> Any:
        if name == "Fn::GetAtt":
            return self._get_att(str(argument[0]), str(argument[1]))
        if name == "Fn::Sub":
            return self._sub(argument)
        if name == "Fn::If":
            condition, if_true, if_false = argument
            return self.resolve(if_true if self.condition(str(condition)) else if_false)
        if name == "Fn::Equals":
            left, right = (self.resolve_string(item) for item in argument)
            return left == right
        if name == "Fn::Not":
            return not self.resolve(argument[0])
        if name == "Fn::And":
            return all(self.resolve(item) for item in argument)
        if name == "Fn::Or":
            return any(self.resolve(item) for item in argument)
        if name == "Fn::Join":
            separator, items = argument
            return str(separator).join(self.resolve_string(item) for item in self.resolve(items))
        if name == "Fn::Split":
            separator, text = argument
            return self.resolve_string(text).split(str(separator))
        if name == "Fn::Select":
            index, items = argument
            return self.resolve(items)[int(self.resolve_string(index))]
        if name == "Fn::Contains":
            items, item = argument
            return self.resolve_string(item) in [_format_value(i) for i in self.resolve(items)]
        if name == "Fn::ToJsonString":
            return json.dumps(self.resolve(argument), separators=(",", ":"))
        raise UnresolvedReferenceError(f"{name} is not supported by the local stack")


# --------------------------------------------------------------------------------------
# What the local stack exposes
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalResources:
    """Physical names of the local resources, and the functions' environment resolved to them."""

    table_name: str
    key_id: str
    key_arn: str
    refresh_queue_url: str
    refresh_dlq_url: str
    revoke_queue_url: str
    revoke_dlq_url: str
    events_observer_queue_url: str
    webhook_secret_arn: str
    webhook_secret_value: str = field(repr=False)
    event_bus_name: str
    region: str
    endpoint_url: str | None
    stack_name: str
    account_id: str
    parameters: Mapping[str, str] = field(repr=False, compare=False, hash=False)
    template: Mapping[str, Any] = field(repr=False, compare=False, hash=False)
    # Logical id -> !Ref value, and "LogicalId.Attribute" -> !GetAtt value.
    refs: Mapping[str, str] = field(repr=False, compare=False, hash=False)
    attributes: Mapping[str, str] = field(repr=False, compare=False, hash=False)

    def queue_url(self, logical_id: str) -> str:
        """The URL of the queue a template logical id (e.g. ``RefreshQueue``) names."""
        if _resource_type(self.template, logical_id) != "AWS::SQS::Queue":
            raise KeyError(f"{logical_id} is not a queue of the template")
        return self.refs[logical_id]

    def resolve(self, value: Any) -> Any:
        """Evaluate a template fragment (``!Ref``, ``!GetAtt``, ``!Sub``, ``!If``...) locally."""
        return self._resolver().resolve(value)

    def function_environment(
        self, logical_id: str, *, overrides: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """A function's variables as Globals + its own Environment declare them, resolved locally."""
        resource = self.template["Resources"].get(logical_id)
        if resource is None or resource.get("Type") != "AWS::Serverless::Function":
            raise KeyError(f"{logical_id} is not a function of the template")
        declared: dict[str, Any] = {}
        declared.update(_globals(self.template, "Function").get("Environment", {}).get("Variables", {}))
        declared.update(resource.get("Properties", {}).get("Environment", {}).get("Variables", {}))
        resolver = self._resolver()
        environment: dict[str, str] = {}
        for name, value in declared.items():
            resolved = resolver.resolve(value)
            if resolved is _NO_VALUE:
                continue
            environment[name] = resolver.resolve_string(resolved)
        environment.update(overrides or {})
        return environment

    def every_function_environment(self, *, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every function's variables together: what one process that runs every handler with one
        configuration needs (tests). Each function itself gets only :meth:`function_environment`."""
        environment: dict[str, str] = {}
        for logical_id in resources_of_type(self.template, "AWS::Serverless::Function"):
            environment.update(self.function_environment(logical_id))
        environment.update(overrides or {})
        return environment

    def _resolver(self) -> _Resolver:
        return _Resolver(
            template=self.template,
            parameters=self.parameters,
            pseudo=_pseudo_parameters(self.region, self.account_id, self.stack_name),
            refs=self.refs,
            attributes=self.attributes,
        )


def _resource_type(template: Mapping[str, Any], logical_id: str) -> str | None:
    resource = template["Resources"].get(logical_id)
    return None if resource is None else str(resource.get("Type"))


def _pseudo_parameters(region: str, account_id: str, stack_name: str) -> dict[str, str]:
    return {
        "AWS::Region": region,
        "AWS::AccountId": account_id,
        "AWS::Partition": PARTITION,
        "AWS::URLSuffix": URL_SUFFIX,
        "AWS::StackName": stack_name,
        "AWS::StackId": f"arn:{PARTITION}:cloudformation:{region}:{account_id}:stack/{stack_name}/local",
    }


# --------------------------------------------------------------------------------------
# Creating the resources
# --------------------------------------------------------------------------------------
@dataclass
class _Build:
    """Mutable state while resources are created (refs and attributes grow as we go)."""

    template: Mapping[str, Any]
    parameters: dict[str, str]
    region: str
    account_id: str
    stack_name: str
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)

    def resolver(self) -> _Resolver:
        return _Resolver(
            template=self.template,
            parameters=self.parameters,
            pseudo=_pseudo_parameters(self.region, self.account_id, self.stack_name),
            refs=self.refs,
            attributes=self.attributes,
        )

    def physical_name(self, logical_id: str) -> str:
        return f"{self.stack_name}-{logical_id}"

    def active(self, logical_id: str) -> bool:
        """False for a resource whose ``Condition`` is false (CloudFormation does not create it)."""
        condition = self.template["Resources"][logical_id].get("Condition")
        return condition is None or self.resolver().condition(str(condition))

    def of_type(self, resource_type: str) -> list[str]:
        """Logical ids of the resources of a type that this stack creates."""
        return [lid for lid in resources_of_type(self.template, resource_type) if self.active(lid)]


def create_resources(
    session: boto3.Session | None = None,
    *,
    endpoint_url: str | None = None,
    stage: str = "local",
    parameters: Mapping[str, str] | None = None,
    template: Mapping[str, Any] | None = None,
) -> LocalResources:
    """Create every resource the code needs in the AWS the clients reach, from the template.

    ``endpoint_url`` is moto's server (``http://127.0.0.1:port``); ``None`` means the in-process
    ``moto.mock_aws`` (or whatever boto3 reaches: call it inside ``mock_aws``). Creating twice
    with the same stage reuses what exists.
    """
    session = session or boto3.Session()
    region = session.region_name or DEFAULT_REGION
    template = template if template is not None else load_template()

    def client(service: str) -> Any:
        return session.client(service, region_name=region, endpoint_url=endpoint_url, config=_CLIENT_CONFIG)  # type: ignore[call-overload]

    account_id = client("sts").get_caller_identity()["Account"]
    build = _Build(
        template=template,
        parameters=parameter_values(template, stage=stage, parameters=parameters),
        region=region,
        account_id=account_id,
        stack_name=stack_name_for(stage),
    )
    _check_rules(build)
    kms: KMSClient = client("kms")
    sqs: SQSClient = client("sqs")
    dynamodb: DynamoDBClient = client("dynamodb")
    secretsmanager: SecretsManagerClient = client("secretsmanager")
    events: EventBridgeClient = client("events")
    cloudwatch = client("cloudwatch")

    # Functions and the API are not created in moto (the local gateway runs the handlers), but
    # alarms name them: they get the names a deployed stack's resources would have.
    for logical_id in build.of_type("AWS::Serverless::Function"):
        build.refs[logical_id] = build.physical_name(logical_id)
        build.attributes[f"{logical_id}.Arn"] = (
            f"arn:{PARTITION}:lambda:{region}:{account_id}:function:{build.physical_name(logical_id)}"
        )
    for logical_id in build.of_type("AWS::Serverless::HttpApi"):
        build.refs[logical_id] = build.physical_name(logical_id)
    for logical_id in build.of_type("AWS::KMS::Key"):
        _create_key(kms, build, logical_id)
    for logical_id in build.of_type("AWS::DynamoDB::Table"):
        _create_table(dynamodb, build, logical_id)
    for logical_id in _queues_in_dependency_order(template):
        if build.active(logical_id):
            _create_queue(sqs, build, logical_id)
    secret_values = {
        logical_id: _create_secret(secretsmanager, build, logical_id)
        for logical_id in build.of_type("AWS::SecretsManager::Secret")
    }
    for logical_id in build.of_type("AWS::Events::EventBus"):
        _create_event_bus(events, build, logical_id)
    for logical_id in build.of_type("AWS::Events::Rule"):
        _create_rule(events, build, logical_id)
    for logical_id in build.of_type("AWS::CloudWatch::Alarm"):
        _create_alarm(cloudwatch, build, logical_id)

    resolver = build.resolver()
    # The bus the functions publish on (each function that publishes names the same one).
    declared = [
        variables["EVENT_BUS_NAME"]
        for variables in (
            _globals(template, "Function").get("Environment", {}).get("Variables", {}),
            *(
                function.get("Properties", {}).get("Environment", {}).get("Variables", {})
                for function in _functions(template).values()
            ),
        )
        if "EVENT_BUS_NAME" in variables
    ]
    buses = {resolver.resolve_string(value) for value in declared}
    if len(buses) != 1:
        raise ValueError(f"the functions must publish on one event bus, not {sorted(buses)}")
    (event_bus_name,) = buses
    observer_url = _create_events_observer(sqs, events, build, event_bus_name)
    return LocalResources(
        table_name=build.refs["InstallationsTable"],
        key_id=build.refs["TokenKey"],
        key_arn=build.attributes["TokenKey.Arn"],
        refresh_queue_url=build.refs["RefreshQueue"],
        refresh_dlq_url=build.refs["RefreshDeadLetterQueue"],
        revoke_queue_url=build.refs["RevokeQueue"],
        revoke_dlq_url=build.refs["RevokeDeadLetterQueue"],
        events_observer_queue_url=observer_url,
        webhook_secret_arn=build.refs["UninstallWebhookSecret"],
        webhook_secret_value=secret_values["UninstallWebhookSecret"],
        event_bus_name=event_bus_name,
        region=region,
        endpoint_url=endpoint_url,
        stack_name=build.stack_name,
        account_id=account_id,
        parameters=dict(build.parameters),
        template=template,
        refs=dict(build.refs),
        attributes=dict(build.attributes),
    )


def _check_rules(build: _Build) -> None:
    """Refuse parameters the template's ``Rules`` refuse, as CloudFormation does before creating."""
    resolver = build.resolver()
    for name, rule in build.template.get("Rules", {}).items():
        if "RuleCondition" in rule and not resolver.resolve(rule["RuleCondition"]):
            continue
        for assertion in rule.get("Assertions", []):
            if not resolver.resolve(assertion["Assert"]):
                raise ValueError(f"rule {name}: {assertion.get('AssertDescription', 'assertion failed')}")


def _create_key(kms: KMSClient, build: _Build, logical_id: str) -> None:
    properties = build.resolver().resolve(_properties(build.template, logical_id))
    aliases = {
        alias_id: build.resolver().resolve_string(_properties(build.template, alias_id)["AliasName"])
        for alias_id, alias in resources_of_type(build.template, "AWS::KMS::Alias").items()
        if _logical_id_of(alias["Properties"]["TargetKeyId"]) == logical_id
    }
    existing = {alias["AliasName"]: alias.get("TargetKeyId") for alias in kms.list_aliases()["Aliases"]}
    key_id = next((existing[name] for name in aliases.values() if existing.get(name)), None)
    if key_id is None:
        created = kms.create_key(
            Description=properties.get("Description", logical_id),
            KeyUsage=properties.get("KeyUsage", "ENCRYPT_DECRYPT"),
            KeySpec=properties.get("KeySpec", "SYMMETRIC_DEFAULT"),
            Policy=json.dumps(properties["KeyPolicy"]),
        )
        key_id = created["KeyMetadata"]["KeyId"]
        if properties.get("EnableKeyRotation"):
            kms.enable_key_rotation(KeyId=key_id)
        for alias_name in aliases.values():
            kms.create_alias(AliasName=alias_name, TargetKeyId=key_id)
    key_arn = kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    build.refs[logical_id] = key_id
    build.attributes[f"{logical_id}.Arn"] = key_arn
    build.attributes[f"{logical_id}.KeyId"] = key_id
    for alias_id, alias_name in aliases.items():
        build.refs[alias_id] = alias_name


def _create_table(dynamodb: DynamoDBClient, build: _Build, logical_id: str) -> None:
    properties = build.resolver().resolve(_properties(build.template, logical_id))
    name = properties.get("TableName") or build.physical_name(logical_id)
    arguments: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "BillingMode": properties.get("BillingMode", "PROVISIONED"),
    }
    for optional in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes", "ProvisionedThroughput"):
        if optional in properties:
            arguments[optional] = properties[optional]
    if "StreamSpecification" in properties:
        arguments["StreamSpecification"] = {"StreamEnabled": True, **properties["StreamSpecification"]}
    sse = properties.get("SSESpecification")
    if sse:
        arguments["SSESpecification"] = {
            "Enabled": bool(sse.get("SSEEnabled")),
            **{key: sse[key] for key in ("SSEType", "KMSMasterKeyId") if key in sse},
        }
    if "DeletionProtectionEnabled" in properties:
        arguments["DeletionProtectionEnabled"] = bool(properties["DeletionProtectionEnabled"])
    try:
        description = dynamodb.create_table(**arguments)["TableDescription"]
    except dynamodb.exceptions.ResourceInUseException:
        description = dynamodb.describe_table(TableName=name)["Table"]
    ttl = properties.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
    recovery = properties.get("PointInTimeRecoverySpecification", {})
    if recovery.get("PointInTimeRecoveryEnabled"):
        dynamodb.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    build.refs[logical_id] = name
    build.attributes[f"{logical_id}.Arn"] = description["TableArn"]
    if "LatestStreamArn" in description:
        build.attributes[f"{logical_id}.StreamArn"] = description["LatestStreamArn"]


def _queues_in_dependency_order(template: Mapping[str, Any]) -> list[str]:
    """Queues, dead-letter queues before the queues that redrive into them."""
    queues = resources_of_type(template, "AWS::SQS::Queue")
    ordered: list[str] = []

    def visit(logical_id: str, seen: tuple[str, ...]) -> None:
        if logical_id in ordered:
            return
        if logical_id in seen:
            raise ValueError(f"redrive cycle through {logical_id}")
        redrive = queues[logical_id].get("Properties", {}).get("RedrivePolicy")
        if redrive:
            visit(_logical_id_of(redrive["deadLetterTargetArn"]), (*seen, logical_id))
        ordered.append(logical_id)

    for logical_id in queues:
        visit(logical_id, ())
    return ordered


def _create_queue(sqs: SQSClient, build: _Build, logical_id: str) -> None:
    properties = build.resolver().resolve(_properties(build.template, logical_id))
    name = properties.get("QueueName") or build.physical_name(logical_id)
    # Keys are the template's names, which are SQS attribute names (typed as literals in the stubs).
    attributes: dict[Any, str] = {
        key: _format_value(properties[key]) for key in _QUEUE_ATTRIBUTES if key in properties
    }
    if "RedrivePolicy" in properties:
        attributes["RedrivePolicy"] = json.dumps(properties["RedrivePolicy"])
    if "RedriveAllowPolicy" in properties:
        attributes["RedriveAllowPolicy"] = json.dumps(properties["RedriveAllowPolicy"])
    try:
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except sqs.exceptions.QueueNameExists:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    build.refs[logical_id] = url
    build.attributes[f"{logical_id}.Arn"] = arn
    build.attributes[f"{logical_id}.QueueName"] = name
    build.attributes[f"{logical_id}.QueueUrl"] = url


def generate_secret_string(spec: Mapping[str, Any]) -> str:
    """A value made like CloudFormation's GenerateSecretString would make it, with ``secrets``."""
    alphabet_parts = {
        "lower": "" if spec.get("ExcludeLowercase") else string.ascii_lowercase,
        "upper": "" if spec.get("ExcludeUppercase") else string.ascii_uppercase,
        "digits": "" if spec.get("ExcludeNumbers") else string.digits,
        "punctuation": "" if spec.get("ExcludePunctuation") else _PUNCTUATION,
        "space": " " if spec.get("IncludeSpace") else "",
    }
    excluded = set(str(spec.get("ExcludeCharacters", "")))
    parts = {kind: "".join(c for c in chars if c not in excluded) for kind, chars in alphabet_parts.items()}
    parts = {kind: chars for kind, chars in parts.items() if chars}
    alphabet = "".join(parts.values())
    length = int(spec.get("PasswordLength", 32))
    if not alphabet or length < 1:
        raise ValueError("GenerateSecretString leaves no characters to choose from")
    require_each = spec.get("RequireEachIncludedType", True) and length >= len(parts)
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if not require_each or all(any(c in chars for c in value) for chars in parts.values()):
            break
    template_text = spec.get("SecretStringTemplate")
    if template_text is None:
        return value
    document = json.loads(template_text)
    document[spec["GenerateStringKey"]] = value
    return json.dumps(document)


def _create_secret(secretsmanager: SecretsManagerClient, build: _Build, logical_id: str) -> str:
    properties = build.resolver().resolve(_properties(build.template, logical_id))
    name = properties.get("Name") or build.physical_name(logical_id)
    if "SecretString" in properties:
        value = str(properties["SecretString"])
    else:
        value = generate_secret_string(properties.get("GenerateSecretString", {}))
    try:
        arn = secretsmanager.create_secret(
            Name=name, Description=properties.get("Description", logical_id), SecretString=value
        )["ARN"]
    except secretsmanager.exceptions.ResourceExistsException:
        existing = secretsmanager.get_secret_value(SecretId=name)
        arn, value = existing["ARN"], existing["SecretString"]
    build.refs[logical_id] = arn
    build.attributes[f"{logical_id}.Id"] = arn
    return value


def _ensure_event_bus(events: EventBridgeClient, name: str) -> None:
    if name == "default":
        return
    with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
        events.create_event_bus(Name=name)


def _create_rule(events: EventBridgeClient, build: _Build, logical_id: str) -> None:
    properties = build.resolver().resolve(_properties(build.template, logical_id))
    name = properties.get("Name") or build.physical_name(logical_id)
    bus = str(properties.get("EventBusName", "default"))
    _ensure_event_bus(events, bus)
    arguments: dict[str, Any] = {
        "Name": name,
        "EventBusName": bus,
        "State": properties.get("State", "ENABLED"),
    }
    if "EventPattern" in properties:
        arguments["EventPattern"] = json.dumps(properties["EventPattern"])
    if "ScheduleExpression" in properties:
        arguments["ScheduleExpression"] = properties["ScheduleExpression"]
    if "Description" in properties:
        arguments["Description"] = properties["Description"]
    arn = events.put_rule(**arguments)["RuleArn"]
    keys = ("Id", "Arn", "Input", "InputPath", "InputTransformer", "RetryPolicy", "DeadLetterConfig")
    targets = [{key: t[key] for key in keys if key in t} for t in properties.get("Targets", [])]
    if targets:
        events.put_targets(Rule=name, EventBusName=bus, Targets=targets)  # type: ignore[arg-type]
    build.refs[logical_id] = name if bus == "default" else f"{bus}|{name}"
    build.attributes[f"{logical_id}.Arn"] = arn


def _create_event_bus(events: EventBridgeClient, build: _Build, logical_id: str) -> None:
    properties = build.resolver().resolve(_properties(build.template, logical_id))
    name = str(properties.get("Name") or build.physical_name(logical_id))
    _ensure_event_bus(events, name)
    arn = events.describe_event_bus(Name=name)["Arn"]
    build.refs[logical_id] = name
    build.attributes[f"{logical_id}.Name"] = name
    build.attributes[f"{logical_id}.Arn"] = arn


# CloudFormation properties of AWS::CloudWatch::Alarm that are PutMetricAlarm arguments of the same name.
_ALARM_ARGUMENTS = (
    "AlarmDescription",
    "ActionsEnabled",
    "OKActions",
    "AlarmActions",
    "InsufficientDataActions",
    "MetricName",
    "Namespace",
    "Statistic",
    "ExtendedStatistic",
    "Dimensions",
    "Period",
    "Unit",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "EvaluateLowSampleCountPercentile",
    "Metrics",
    "ThresholdMetricId",
)


def _create_alarm(cloudwatch: Any, build: _Build, logical_id: str) -> None:
    """The alarm as declared, named like CloudFormation names it (after the stack and logical id)."""
    properties = build.resolver().resolve(_properties(build.template, logical_id))
    name = str(properties.get("AlarmName") or build.physical_name(logical_id))
    arguments = {key: properties[key] for key in _ALARM_ARGUMENTS if key in properties}
    for number in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
        if number in arguments:
            arguments[number] = int(arguments[number])
    if "Threshold" in arguments:
        arguments["Threshold"] = float(arguments["Threshold"])
    cloudwatch.put_metric_alarm(AlarmName=name, **arguments)
    build.refs[logical_id] = name
    build.attributes[f"{logical_id}.Arn"] = (
        f"arn:{PARTITION}:cloudwatch:{build.region}:{build.account_id}:alarm:{name}"
    )


def _create_events_observer(sqs: SQSClient, events: EventBridgeClient, build: _Build, bus: str) -> str:
    """Local only: a queue that receives every event the functions publish (source ultracart.oauth)."""
    name = f"{build.stack_name}-{OBSERVER_NAME}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    _ensure_event_bus(events, bus)
    events.put_rule(
        Name=name,
        EventBusName=bus,
        State="ENABLED",
        Description="Local only: copies published events for tests and the developer",
        EventPattern=json.dumps({"source": [EVENT_SOURCE]}),
    )
    events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": OBSERVER_NAME, "Arn": arn}])
    return url


# --------------------------------------------------------------------------------------
# How functions are wired (for the local gateway, schedule and queue drains)
# --------------------------------------------------------------------------------------
class FunctionCode(NamedTuple):
    """Where a function's code lives and its ``module.function`` handler."""

    code_dir: Path
    handler: str


class Route(NamedTuple):
    """One HttpApi route: ``GET /tokens/{merchant_id}`` -> ``TokenApiFunction`` with ``AWS_IAM``."""

    method: str
    path: str
    logical_id: str
    auth: str  # "AWS_IAM" or "NONE"


class SqsEventSource(NamedTuple):
    """The queue that feeds a worker and how the event source batches it."""

    queue_logical_id: str
    batch_size: int
    report_batch_item_failures: bool
    maximum_concurrency: int | None


class Schedule(NamedTuple):
    """A function's schedule: the expression and, for ``rate(...)``, its period in seconds."""

    logical_id: str
    event_name: str
    expression: str
    rate_seconds: int | None


def _functions(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of_type(template, "AWS::Serverless::Function")


def _events(function: Mapping[str, Any], event_type: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, event in function.get("Properties", {}).get("Events", {}).items():
        if event.get("Type") == event_type:
            yield name, event.get("Properties", {})


def function_handlers(template: Mapping[str, Any], *, root: Path = ROOT) -> dict[str, FunctionCode]:
    """Logical id -> (code directory, handler) for every function of the template."""
    defaults = _globals(template, "Function")
    handlers: dict[str, FunctionCode] = {}
    for logical_id, function in _functions(template).items():
        properties = function.get("Properties", {})
        code_uri = properties.get("CodeUri", defaults.get("CodeUri"))
        handler = properties.get("Handler", defaults.get("Handler"))
        if not isinstance(code_uri, str) or not isinstance(handler, str):
            raise ValueError(f"{logical_id} needs a local CodeUri and a Handler")
        handlers[logical_id] = FunctionCode(code_dir=(root / code_uri).resolve(), handler=handler)
    return handlers


def function_timeouts(template: Mapping[str, Any]) -> dict[str, int]:
    """Logical id -> Timeout in seconds (the function's own, else Globals, else Lambda's 3)."""
    default = int(_globals(template, "Function").get("Timeout", 3))
    return {
        logical_id: int(function.get("Properties", {}).get("Timeout", default))
        for logical_id, function in _functions(template).items()
    }


def http_routes(template: Mapping[str, Any]) -> list[Route]:
    """Every ``HttpApi`` event of every function, with its authorizer (``AWS_IAM`` or ``NONE``)."""
    apis = resources_of_type(template, "AWS::Serverless::HttpApi")
    routes: list[Route] = []
    for logical_id, function in _functions(template).items():
        for _name, event in _events(function, "HttpApi"):
            api_properties = apis.get(_logical_id_of(event["ApiId"]), {}).get("Properties", {})
            default_auth = api_properties.get("Auth", {}).get("DefaultAuthorizer", "NONE")
            auth = event.get("Auth", {}).get("Authorizer", default_auth)
            routes.append(
                Route(
                    method=str(event["Method"]).upper(),
                    path=str(event["Path"]),
                    logical_id=logical_id,
                    auth=auth,
                )
            )
    return routes


def sqs_event_sources(template: Mapping[str, Any]) -> dict[str, SqsEventSource]:
    """Function logical id -> the queue that feeds it (one SQS event source per function)."""
    sources: dict[str, SqsEventSource] = {}
    for logical_id, function in _functions(template).items():
        for name, event in _events(function, "SQS"):
            if logical_id in sources:
                raise ValueError(f"{logical_id} has more than one SQS event source ({name})")
            sources[logical_id] = SqsEventSource(
                queue_logical_id=_logical_id_of(event["Queue"]),
                batch_size=int(event.get("BatchSize", 10)),
                report_batch_item_failures="ReportBatchItemFailures"
                in event.get("FunctionResponseTypes", []),
                maximum_concurrency=event.get("ScalingConfig", {}).get("MaximumConcurrency"),
            )
    return sources


_RATE = re.compile(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> int | None:
    """Seconds between runs of a ``rate(...)`` expression; None for ``cron``/``at``."""
    match = _RATE.fullmatch(expression.strip())
    if match is None:
        return None
    return int(match.group(1)) * _RATE_UNITS[match.group(2).rstrip("s")]


def schedules(template: Mapping[str, Any], *, parameters: Mapping[str, str] | None = None) -> list[Schedule]:
    """Every ``Schedule``/``ScheduleV2`` event, its expression resolved against the parameters."""
    values = parameter_values(template, parameters=parameters)
    resolver = _Resolver(template=template, parameters=values, pseudo={}, refs={}, attributes={})
    found: list[Schedule] = []
    for logical_id, function in _functions(template).items():
        for event_type in ("Schedule", "ScheduleV2"):
            for name, event in _events(function, event_type):
                expression = resolver.resolve_string(
                    event["Schedule" if event_type == "Schedule" else "ScheduleExpression"]
                )
                found.append(Schedule(logical_id, name, expression, rate_seconds(expression)))
    return found
