"""Each function's IAM role as CloudFormation receives it, enforced on the local AWS.

Two layers, because moto's own enforcement is action-deep only:

1. moto's IAM enforcement (``INITIAL_NO_AUTH_ACTION_COUNT``): every request must be signed with
   credentials moto's IAM knows, and the role's policies must allow the *action*. moto matches
   resources against ``*`` and evaluates almost no conditions, so the roles it holds are the
   template's roles with every Allow's actions kept and resources and conditions dropped.
2. :class:`PolicyChecker`, on every call a handler's clients make: the action, the resource ARN
   and the condition keys this template relies on (``dynamodb:LeadingKeys``,
   ``kms:EncryptionContext:*``, ``events:source``) against the role's real statements (and the
   Deny statements of a KMS key's policy). A call the role does not allow is answered
   ``AccessDeniedException`` before it leaves the process, as AWS would answer it, and is kept in
   :attr:`PolicyChecker.violations` so a test fails even when the code swallowed the refusal.

The roles come from the *translated* template (what ``sam deploy`` submits), so the managed
policies SAM attaches (``AWSLambdaBasicExecutionRole``, ``AWSLambdaSQSQueueExecutionRole``,
X-Ray) are part of what is checked.
"""

from __future__ import annotations

import contextvars
import fnmatch
import json
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.credentials import Credentials, ReadOnlyCredentials

PARTITION = "aws"
# The operation a botocore call names -> the IAM action it needs, where the two differ.
_ACTION_OF = {
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
}
_IAM_PREFIX = {
    "dynamodb": "dynamodb",
    "kms": "kms",
    "sqs": "sqs",
    "events": "events",
    "secretsmanager": "secretsmanager",
}
_ALWAYS_ALLOWED = {"sts:GetCallerIdentity"}
_MOTO_BATCH_ACTIONS = {"sqs:SendMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}

# The identity of the code running in this thread: a function's logical id, or None (the harness).
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("devstack_identity", default=None)


class UncheckableCallError(RuntimeError):
    """A call the checker cannot map to an action and resources: teach it, never let it pass."""


# --------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Statement:
    """One resolved IAM statement."""

    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sid: str = ""

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Statement:
        if "NotAction" in value or "NotResource" in value:
            raise UncheckableCallError(f"statement {value.get('Sid')!r}: NotAction/NotResource not supported")
        return cls(
            effect=str(value["Effect"]),
            actions=tuple(_strings(value.get("Action"))),
            resources=tuple(_strings(value.get("Resource", "*"))),
            condition=dict(value.get("Condition") or {}),
            sid=str(value.get("Sid") or ""),
        )


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def _like(pattern: str, value: str, *, case: bool = True) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern)


@dataclass(frozen=True)
class Call:
    """What an AWS call asks IAM for: one action, its resources and its request context."""

    action: str
    resources: tuple[str, ...]
    context: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __str__(self) -> str:
        keys = ", ".join(f"{k}={list(v)}" for k, v in sorted(self.context.items()))
        return f"{self.action} on {', '.join(self.resources)}" + (f" ({keys})" if keys else "")


def _condition_holds(
    condition: Mapping[str, Mapping[str, Any]], context: Mapping[str, tuple[str, ...]]
) -> bool:
    """IAM's condition evaluation for the operators this template uses (unknown ones refuse)."""
    for operator, keys in condition.items():
        quantifier, _, name = operator.rpartition(":")
        if_exists = name.endswith("IfExists")
        name = name.removesuffix("IfExists")
        for key, expected in keys.items():
            wanted = _strings(expected)
            present = key.lower() in {k.lower() for k in context}
            values = next((v for k, v in context.items() if k.lower() == key.lower()), ())
            if name == "Null":
                if (wanted[0].lower() == "true") == present:
                    return False
                continue
            if not present:
                if quantifier == "ForAllValues" or if_exists:
                    continue  # vacuously true, as IAM evaluates it
                return False
            match = _matcher(name)
            if quantifier == "ForAllValues":
                ok = all(any(match(w, v) for w in wanted) for v in values)
            else:  # single-valued or ForAnyValue: any value matching any expected one
                ok = any(any(match(w, v) for w in wanted) for v in values)
            if not ok:
                return False
    return True


def _matcher(name: str) -> Any:
    if name == "StringEquals":
        return lambda w, v: w == v
    if name == "StringEqualsIgnoreCase":
        return lambda w, v: w.lower() == v.lower()
    if name in ("StringLike", "ArnLike"):
        return lambda w, v: _like(w, v)
    if name == "ArnEquals":
        return lambda w, v: w == v
    raise UncheckableCallError(f"condition operator {name} is not supported by the local checker")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def decide(
    statements: Iterable[Statement], call: Call, *, resource_denies: Iterable[Statement] = ()
) -> Decision:
    """IAM's evaluation for one call: an explicit Deny wins; otherwise every resource needs an Allow."""
    if call.action in _ALWAYS_ALLOWED:
        return Decision(True, "always allowed")
    every = list(statements)
    for statement in [*every, *resource_denies]:
        if statement.effect != "Deny":
            continue
        if _applies(statement, call.action, call.resources, call.context):
            return Decision(False, f"explicitly denied by {statement.sid or 'a Deny statement'}")
    for resource in call.resources:
        if not any(
            statement.effect == "Allow" and _applies(statement, call.action, (resource,), call.context)
            for statement in every
        ):
            return Decision(
                False, f"no statement allows {call.action} on {resource} with this request's context"
            )
    return Decision(True, "allowed")


def _applies(
    statement: Statement, action: str, resources: tuple[str, ...], context: Mapping[str, tuple[str, ...]]
) -> bool:
    if not any(_like(pattern, action, case=False) for pattern in statement.actions):
        return False
    if not any(_like(pattern, resource) for pattern in statement.resources for resource in resources):
        return False
    return _condition_holds(statement.condition, context)


# --------------------------------------------------------------------------------------
# Roles from the translated template
# --------------------------------------------------------------------------------------
_MANAGED_CACHE: dict[str, Any] = {}


def managed_policy_statements(arn: str) -> list[Statement]:
    """An AWS managed policy's statements, from the copy moto ships."""
    if not _MANAGED_CACHE:
        from moto.iam.aws_managed_policies import aws_managed_policies_data

        _MANAGED_CACHE.update(json.loads(aws_managed_policies_data))
    name = arn.rsplit("/", 1)[-1]
    if name not in _MANAGED_CACHE:
        raise UncheckableCallError(f"managed policy {arn} is unknown to the local checker")
    document = _MANAGED_CACHE[name]["Document"]
    return [Statement.from_json(s) for s in _statement_list(document)]


def _statement_list(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statement = document["Statement"]
    return [statement] if isinstance(statement, dict) else list(statement)


@dataclass(frozen=True)
class Role:
    """A function's execution role, resolved: its name and every statement of every policy."""

    function: str
    logical_id: str
    statements: tuple[Statement, ...]
    trust: Mapping[str, Any]

    def relaxed_policy(self) -> dict[str, Any]:
        """What moto's enforcement holds: every allowed action, on any resource, unconditionally."""
        actions = {a for s in self.statements if s.effect == "Allow" for a in s.actions}
        # moto asks for the batch operation's name, where AWS asks for the single action's.
        actions |= {f"{a}Batch" for a in actions if a in _MOTO_BATCH_ACTIONS}
        return {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": sorted(actions), "Resource": "*"}],
        }


def function_roles(translated: Mapping[str, Any], resolve: Any) -> dict[str, Role]:
    """Every ``AWS::Lambda::Function`` of a translated template -> its role, resolved with ``resolve``
    (the local stack's intrinsic resolver, which knows the local ARNs)."""
    resources = translated["Resources"]
    roles: dict[str, Role] = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::Lambda::Function":
            continue
        role_ref = resource["Properties"]["Role"]
        if not (isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref):
            raise UncheckableCallError(f"{logical_id}'s role is not a role of the template")
        role_id = role_ref["Fn::GetAtt"][0]
        properties = resolve(resources[role_id]["Properties"])
        statements: list[Statement] = []
        for policy in properties.get("Policies", []):
            statements += [Statement.from_json(s) for s in _statement_list(policy["PolicyDocument"])]
        for arn in properties.get("ManagedPolicyArns", []):
            statements += managed_policy_statements(str(arn))
        roles[logical_id] = Role(
            logical_id, role_id, tuple(statements), properties["AssumeRolePolicyDocument"]
        )
    return roles


def key_policy_denies(template: Mapping[str, Any], resolve: Any) -> dict[str, list[Statement]]:
    """Key logical id -> the Deny statements of its key policy that bind every principal."""
    denies: dict[str, list[Statement]] = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::KMS::Key":
            continue
        policy = resolve(resource["Properties"]["KeyPolicy"])
        denies[logical_id] = [
            Statement.from_json(s)
            for s in _statement_list(policy)
            if s["Effect"] == "Deny" and s.get("Principal") == "*"
        ]
    return denies


# --------------------------------------------------------------------------------------
# From a botocore call to what IAM is asked
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Names:
    """The local account's ARNs, to turn the names a call uses into the ARNs IAM sees."""

    region: str
    account_id: str
    key_arns: Mapping[str, str]  # key id, key ARN or alias name -> key ARN
    key_logical_ids: Mapping[str, str]  # key ARN -> logical id (for its key policy)
    secret_arns: Mapping[str, str]  # secret name or ARN -> ARN

    def arn(self, service: str, resource: str) -> str:
        return f"arn:{PARTITION}:{service}:{self.region}:{self.account_id}:{resource}"


_LEADING = re.compile(r"^\s*(#?\w+)\s*=\s*(:\w+)")


def iam_call(service: str, operation: str, params: Mapping[str, Any], names: Names) -> Call:
    """The action, resources and condition keys of one botocore call."""
    prefix = _IAM_PREFIX.get(service)
    if service == "sts" and operation == "GetCallerIdentity":
        return Call("sts:GetCallerIdentity", ("*",))
    if prefix is None:
        raise UncheckableCallError(f"{service}:{operation} is not known to the local checker")
    action = _ACTION_OF.get((service, operation), f"{prefix}:{operation}")
    if service == "dynamodb":
        return _dynamodb_call(action, operation, params, names)
    if service == "kms":
        return _kms_call(action, params, names)
    if service == "sqs":
        url = str(params.get("QueueUrl") or "")
        if not url:
            raise UncheckableCallError(f"{action} without a QueueUrl")
        return Call(action, (names.arn("sqs", url.rstrip("/").rsplit("/", 1)[-1]),))
    if service == "events":
        if operation != "PutEvents":
            raise UncheckableCallError(f"{action} is not known to the local checker")
        entries = params.get("Entries") or []
        buses = {str(e.get("EventBusName") or "default") for e in entries}
        arns = tuple(
            sorted(b if b.startswith("arn:") else names.arn("events", f"event-bus/{b}") for b in buses)
        )
        sources = tuple(sorted({str(e.get("Source")) for e in entries}))
        return Call(action, arns, {"events:source": sources})
    secret = str(params.get("SecretId") or "")
    return Call(action, (names.secret_arns.get(secret, secret),))


def _dynamodb_call(action: str, operation: str, params: Mapping[str, Any], names: Names) -> Call:
    table = str(params.get("TableName") or "")
    if operation in ("GetItem", "PutItem", "UpdateItem", "DeleteItem"):
        item = params.get("Key") or params.get("Item") or {}
        leading = tuple(str(v) for v in (item.get("pk") or {}).values())
        return Call(action, (names.arn("dynamodb", f"table/{table}"),), {"dynamodb:LeadingKeys": leading})
    if operation == "Query":
        index = params.get("IndexName")
        if index:
            return Call(action, (names.arn("dynamodb", f"table/{table}/index/{index}"),))
        match = _LEADING.match(str(params.get("KeyConditionExpression") or ""))
        if match is None:
            raise UncheckableCallError("a table Query whose partition key the checker cannot read")
        values = params.get("ExpressionAttributeValues") or {}
        leading = tuple(str(v) for v in (values.get(match.group(2)) or {}).values())
        return Call(action, (names.arn("dynamodb", f"table/{table}"),), {"dynamodb:LeadingKeys": leading})
    if operation in ("DescribeTable", "Scan"):
        return Call(action, (names.arn("dynamodb", f"table/{table}"),))
    raise UncheckableCallError(f"dynamodb:{operation} is not known to the local checker")


def _kms_call(action: str, params: Mapping[str, Any], names: Names) -> Call:
    key = str(params.get("KeyId") or "")
    arn = names.key_arns.get(key) or names.key_arns.get(key.removeprefix("alias/"))
    if arn is None:
        raise UncheckableCallError(f"{action} on a key the local checker does not know ({key or 'no KeyId'})")
    context_map = params.get("EncryptionContext") or {}
    context: dict[str, tuple[str, ...]] = {
        f"kms:EncryptionContext:{k}": (str(v),) for k, v in context_map.items()
    }
    if context_map:
        context["kms:EncryptionContextKeys"] = tuple(sorted(context_map))
    return Call(action, (arn,), context)


# --------------------------------------------------------------------------------------
# The checker and the credentials each identity signs with
# --------------------------------------------------------------------------------------
@dataclass
class Violation:
    identity: str
    call: Call
    reason: str

    def __str__(self) -> str:
        return f"{self.identity}: {self.call}: {self.reason}"


class PolicyChecker:
    """Checks every call of a function's clients against its role; records and refuses the rest."""

    def __init__(
        self, roles: Mapping[str, Role], names: Names, key_denies: Mapping[str, list[Statement]]
    ) -> None:
        self.roles = dict(roles)
        self.names = names
        self._key_denies = dict(key_denies)
        self._lock = threading.Lock()
        self.calls: list[tuple[str, Call]] = []
        self.violations: list[Violation] = []

    def check(self, identity: str, service: str, operation: str, params: Mapping[str, Any]) -> Decision:
        role = self.roles.get(identity)
        if role is None:
            raise UncheckableCallError(f"{identity} has no role in the template")
        call = iam_call(service, operation, params, self.names)
        denies: list[Statement] = []
        if service == "kms":
            logical = self.names.key_logical_ids.get(call.resources[0])
            denies = self._key_denies.get(logical or "", [])
        decision = decide(role.statements, call, resource_denies=denies)
        with self._lock:
            self.calls.append((identity, call))
            if not decision.allowed:
                self.violations.append(Violation(identity, call, decision.reason))
        return decision

    def take_violations(self) -> list[Violation]:
        with self._lock:
            taken, self.violations = self.violations, []
        return taken


def attach_checks(events: Any, *, identity: str | None = None) -> None:
    """Judge the calls of the clients made from a botocore session (or of one client: its event
    system) with the active enforcement's checker: as ``identity``, or as whoever runs in the
    calling thread (:func:`acting_as`). Nothing is judged while no enforcement is active."""

    def judge(params: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        active = _active
        who = identity or _current.get()
        if active is None or who is None:
            return  # the harness (tests, the stack's own set-up): not a function of the template
        decision = active.checker.check(who, model.service_model.service_name, model.name, params)
        if not decision.allowed:
            context["devstack_denied"] = f"{who} ({active.checker.roles[who].logical_id}): {decision.reason}"

    events.register("before-parameter-build", judge)
    events.register("before-call", _refuse_denied)


def _refuse_denied(context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
    reason = context.get("devstack_denied")
    if reason is None:
        return None
    parsed = {
        "Error": {"Code": "AccessDeniedException", "Message": f"User is not authorized: {reason}"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return AWSResponse("http://devstack.invalid/", 400, HTTPHeaders(), None), parsed


@contextmanager
def acting_as(function: str | None) -> Iterator[None]:
    """Run the block as ``function`` (a logical id of the template): its clients sign with the
    function's role and the checker judges its calls against that role."""
    token = _current.set(function)
    try:
        yield
    finally:
        _current.reset(token)


# Credentials moto accepts while it enforces nothing (the local stack's fake ones).
_UNENFORCED = ReadOnlyCredentials("testing", "testing", None)


class IdentityCredentials(Credentials):
    """Credentials that are those of whoever runs in the calling thread, under the active
    enforcement: a function's role session inside :func:`acting_as`, the harness's otherwise
    (and the fake ones while no enforcement is active)."""

    def __init__(self) -> None:
        super().__init__("testing", "testing", None, method="devstack")

    harness_only = False

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        active, identity = _active, None if self.harness_only else _current.get()
        if active is None:
            return _UNENFORCED
        pair = active.identities.harness if identity is None else active.identities.functions[identity]
        return pair.frozen()


# --------------------------------------------------------------------------------------
# The roles in moto, and the switch that makes moto enforce them
# --------------------------------------------------------------------------------------
HARNESS_USER = "devstack-harness"
_HARNESS_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


@dataclass(frozen=True)
class KeyPair:
    """Credentials the local AWS knows (moto's fake ones: not a secret of any real system)."""

    access_key: str
    secret_key: str
    token: str | None = None

    def frozen(self) -> ReadOnlyCredentials:
        return ReadOnlyCredentials(self.access_key, self.secret_key, self.token)


@dataclass(frozen=True)
class Identities:
    """The credentials the local AWS knows: the harness's (tests, the stack's own set-up and
    tools) and each function's role session."""

    harness: KeyPair
    functions: Mapping[str, KeyPair]


def provision(iam: Any, sts: Any, roles: Mapping[str, Role], *, prefix: str) -> Identities:
    """Create the harness user and every function's role (actions only: see the module's doc) in
    moto's IAM, and a session of each role. Call before :func:`enforcing` (nothing is signed yet)."""
    # Names of their own: moto's IAM lives as long as the process, and a process may start several stacks.
    prefix = f"{prefix}-{uuid.uuid4().hex[:8]}"
    user = f"{prefix}-{HARNESS_USER}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="harness", PolicyDocument=json.dumps(_HARNESS_POLICY))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    harness = KeyPair(key["AccessKeyId"], key["SecretAccessKey"])
    functions: dict[str, KeyPair] = {}
    for function, role in roles.items():
        name = f"{prefix}-{role.logical_id}"[:64]
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(role.trust))["Role"]["Arn"]
        iam.put_role_policy(
            RoleName=name, PolicyName="actions", PolicyDocument=json.dumps(role.relaxed_policy())
        )
        answer = sts.assume_role(RoleArn=arn, RoleSessionName=function[:64], DurationSeconds=43200)[
            "Credentials"
        ]
        functions[function] = KeyPair(
            answer["AccessKeyId"], answer["SecretAccessKey"], answer["SessionToken"]
        )
    return Identities(harness, functions)


@dataclass(frozen=True)
class Enforcement:
    """What is enforced in this process now: who may sign, and the checker of their calls."""

    identities: Identities
    checker: PolicyChecker


_enforce_lock = threading.Lock()
_active: Enforcement | None = None


@contextmanager
def enforced(identities: Identities, checker: PolicyChecker) -> Iterator[Enforcement]:
    """moto's IAM enforcement on for this process's moto (its documented setting
    ``INITIAL_NO_AUTH_ACTION_COUNT``, set at run time because moto is imported already), with
    ``identities`` signing and ``checker`` judging every identity session's calls. One at a time."""
    global _active
    from moto import settings

    with _enforce_lock:
        if _active is not None:
            raise RuntimeError("roles are already enforced in this process")
        previous = settings.INITIAL_NO_AUTH_ACTION_COUNT
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        _active = Enforcement(identities, checker)
    try:
        yield _active
    finally:
        with _enforce_lock:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = previous
            _active = None


def active() -> Enforcement | None:
    """The enforcement in force in this process, if any."""
    return _active


def harness_session() -> Any:
    """A botocore session whose clients always sign as the harness of the active enforcement
    (the tests' own view of the local AWS, even from inside a function's call), unchecked."""
    credentials = IdentityCredentials()
    credentials.harness_only = True
    return _session_with(credentials, checked=False)


def identity_session() -> Any:
    """A botocore session whose clients sign as whoever runs in the calling thread under the
    active enforcement (the harness, or the function :func:`acting_as` names), and whose calls
    the active checker judges. Its clients stay valid across enforcements (tests reuse them)."""
    return _session_with(IdentityCredentials(), checked=True)


def _session_with(credentials: Credentials, *, checked: bool) -> Any:
    import botocore.session
    from botocore.credentials import CredentialProvider

    class _Provider(CredentialProvider):
        METHOD = "devstack"

        def load(self) -> Credentials:
            return credentials

    session = botocore.session.get_session()
    session.get_component("credential_provider").insert_before("env", _Provider())
    if checked:
        attach_checks(session.get_component("event_emitter"))
    return session


def names_of(resources: Any) -> Names:
    """The ARNs of a local stack's keys and secrets (``devstack.resources.LocalResources``)."""
    key_arns: dict[str, str] = {}
    key_logical_ids: dict[str, str] = {}
    secret_arns: dict[str, str] = {}
    for logical_id, resource in resources.template["Resources"].items():
        kind = resource.get("Type")
        if kind == "AWS::KMS::Key" and logical_id in resources.refs:
            arn = resources.attributes[f"{logical_id}.Arn"]
            key_arns[resources.refs[logical_id]] = key_arns[arn] = arn
            key_logical_ids[arn] = logical_id
        elif kind == "AWS::KMS::Alias" and logical_id in resources.refs:
            target = resources.resolve(resource["Properties"]["TargetKeyId"])
            alias = str(resources.resolve(resource["Properties"]["AliasName"]))
            key_arns[alias.removeprefix("alias/")] = key_arns.get(str(target), str(target))
        elif kind == "AWS::SecretsManager::Secret" and logical_id in resources.refs:
            arn = resources.refs[logical_id]
            secret_arns[arn] = arn
            secret_arns[arn.rsplit(":", 1)[-1].rsplit("-", 1)[0]] = arn
    return Names(resources.region, resources.account_id, key_arns, key_logical_ids, secret_arns)
