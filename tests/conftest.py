"""Shared fixtures: fake AWS credentials, moto in-process and moto's server, resources from template.yaml."""

from __future__ import annotations

import gc
import os
import urllib.request
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from devstack.motolock import serialize_dynamodb
from devstack.resources import LocalResources, create_resources
from devstack.stack import LocalStack
from tests.support.moto_stack import in_process_stack, sessions_kept_per_process
from tests.support.roles import package_under_roles

# pytest-xdist's groups under pytest 9.2 (hooks: conftest registers what it imports).
from tests.support.xdist_groups import pytest_collection_modifyitems, pytest_configure  # noqa: F401

REGION = "us-east-1"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Python's cyclic garbage collector, tuned for a test process (a tenth of the unit tests' CPU).

    After collection the heap holds every imported module (botocore's models, moto, hypothesis),
    which lives until the process ends; each full collection walked all of it again. ``freeze``
    leaves those objects out of every later collection, and larger thresholds collect the many
    short-lived objects of moto's requests less often. Only when garbage is collected changes,
    not what is: cycles are still freed, and pytest's own collection at the end still runs.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


@pytest.fixture(autouse=True)
def _roles_respected() -> Iterator[None]:
    """After every test: no function of a running local stack made a call its role does not allow
    (the stack refused it as AWS would; this fails the test even when the code swallowed it)."""
    yield
    stack = LocalStack.running()
    if stack is not None:
        violations = stack.take_violations()
        assert not violations, "calls the functions' roles do not allow:\n" + "\n".join(map(str, violations))


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region; no endpoint override, so nothing can reach a real account."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name)


@pytest.fixture
def aws(aws_env: None) -> Iterator[LocalResources]:
    """template.yaml's resources in moto's in-process mock (``mock_aws`` stays active during the test),
    empty: created once per process, every item and message deleted before each test. The package's
    clients and the test's own come from sessions kept for the whole process, as a warm Lambda's."""
    with in_process_stack(REGION) as resources, sessions_kept_per_process(REGION):
        yield resources


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server on 127.0.0.1 with a free port, for the whole session; yields its endpoint URL."""
    serialize_dynamodb()  # DynamoDB's one-write-at-a-time per item, which moto's threads lack
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_server(
    aws_env: None, moto_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[LocalResources]:
    """template.yaml's resources in a freshly reset moto server; AWS_ENDPOINT_URL points boto3 at it.
    Every function's role is enforced (tests.support.roles): a handler the test invokes, or code it
    runs ``acting_as`` a function, signs with that function's role and is judged against it.
    ``@pytest.mark.client_secret(value)``: the stack is deployed with an UltraCart client secret
    (a Secrets Manager secret holding ``value``, its ARN the ``UltraCartClientSecretArn`` parameter)."""
    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(reset, timeout=10) as response:
        response.read()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    session = boto3.Session(region_name=REGION)
    parameters: dict[str, str] = {}
    marker = request.node.get_closest_marker("client_secret")
    if marker is not None:
        secrets = session.client("secretsmanager", endpoint_url=moto_server)
        created = secrets.create_secret(Name="ultracart-client-secret", SecretString=str(marker.args[0]))
        parameters["UltraCartClientSecretArn"] = created["ARN"]
    resources = create_resources(session, endpoint_url=moto_server, stage="test", parameters=parameters)
    with package_under_roles(resources, moto_server, monkeypatch):
        yield resources
