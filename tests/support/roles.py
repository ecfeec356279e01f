"""Every role enforced for tests that run the package against moto's server (``aws_server``).

The same enforcement as the local stack's (:mod:`devstack.iam`): the roles of the translated
template in moto's IAM with enforcement on, the package's clients signing as the function the
invoker (or :func:`devstack.iam.acting_as`) names, every such call judged against its role.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3

from devstack import iam
from devstack.resources import LocalResources
from devstack.translate import translate

_sessions: dict[str, Any] = {}


def identity_session() -> Any:
    """One identity session per process (its clients stay valid from one test to the next)."""
    if "identity" not in _sessions:
        _sessions["identity"] = iam.identity_session()
    return _sessions["identity"]


def harness_boto3_session(region: str) -> boto3.Session:
    """A boto3 session that signs as the harness of whatever enforcement is active (or with the fake
    credentials when none is): the tests' own view of the local AWS."""
    if "harness" not in _sessions:
        _sessions["harness"] = iam.harness_session()
    return boto3.Session(botocore_session=_sessions["harness"], region_name=region)


@contextmanager
def enforced_roles(resources: LocalResources, endpoint: str) -> Iterator[iam.Enforcement]:
    """The template's roles created in the (freshly reset) moto server and enforced until the end
    of the block; afterwards nothing a function called may have been refused."""
    roles = iam.function_roles(translate(), resources.resolve)
    checker = iam.PolicyChecker(
        roles, iam.names_of(resources), iam.key_policy_denies(resources.template, resources.resolve)
    )
    unsigned = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=resources.region
    )
    identities = iam.provision(
        unsigned.client("iam", endpoint_url=endpoint),
        unsigned.client("sts", endpoint_url=endpoint),
        roles,
        prefix=resources.stack_name,
    )
    with iam.enforced(identities, checker) as enforcement:
        yield enforcement
    violations = checker.take_violations()
    assert not violations, "calls the functions' roles do not allow:\n" + "\n".join(map(str, violations))


@contextmanager
def package_under_roles(
    resources: LocalResources, endpoint: str, monkeypatch: Any
) -> Iterator[iam.Enforcement]:
    """:func:`enforced_roles`, with the package's clients built from the identity session and the
    process's credentials (boto3 clients the tests make themselves) the harness's."""
    from ucoauth.adapters import aws

    with enforced_roles(resources, endpoint) as enforcement:
        harness = enforcement.identities.harness
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", harness.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", harness.secret_key)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)
        # boto3's default session keeps the credentials it first read: a new one reads these.
        boto3.setup_default_session()
        aws.set_session(identity_session())
        try:
            yield enforcement
        finally:
            aws.set_session(None)
