"""The ``ucoauth`` command line (``ucoauth_client.cli``) without the network: where it finds the API,
the region it signs for (the client's rule), the answers it prints, and where it is installed from."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from moto import mock_aws

from tests.support.token_client import CLIENT_DIR, CannedOpener, local_session
from ucoauth_client.aws import signing_region
from ucoauth_client.cli import main
from ucoauth_client.cli.api import EXIT_FAILED, EXIT_USAGE, AdminClient, CliError, Endpoint, find_endpoint
from ucoauth_client.errors import TokenClientError

ROOT = Path(__file__).resolve().parents[2]
EXECUTE_API = "https://abc123.execute-api.eu-west-1.amazonaws.com"


def unconfigured_session() -> botocore.session.Session:
    """A session with credentials and no region anywhere."""
    session = local_session()
    session.set_config_variable("region", None)
    return session


@pytest.fixture
def cloudformation(aws_env: None) -> Iterator[None]:
    with mock_aws():
        yield


def test_the_region_is_the_given_one_then_the_urls_then_the_configured_one() -> None:
    session = local_session()  # configured: us-east-1
    assert signing_region(EXECUTE_API, session, "ap-south-1") == "ap-south-1"
    assert signing_region(EXECUTE_API, session) == "eu-west-1"
    assert signing_region("https://abc.execute-api.cn-north-1.amazonaws.com.cn", session) == "cn-north-1"
    assert signing_region("https://auth.example.com", session) == "us-east-1"


def test_without_a_region_anywhere_nothing_is_guessed() -> None:
    with pytest.raises(TokenClientError, match="no AWS region"):
        signing_region("https://auth.example.com", unconfigured_session())


def test_a_url_names_the_admin_api_and_its_region(aws_env: None) -> None:
    endpoint = find_endpoint(None, EXECUTE_API + "/", None)
    assert (endpoint.base_url, endpoint.region) == (f"{EXECUTE_API}/admin", "eu-west-1")
    assert endpoint.session is not None  # signed with the caller's credentials
    local = find_endpoint(None, "http://127.0.0.1:3000/admin", "us-west-2")
    assert (local.base_url, local.region, local.session) == ("http://127.0.0.1:3000/admin", "us-west-2", None)


def test_a_url_that_is_not_http_is_a_usage_error(aws_env: None) -> None:
    with pytest.raises(CliError) as raised:
        find_endpoint(None, "file:///etc/passwd", None)
    assert raised.value.code == EXIT_USAGE


def test_a_stack_is_found_by_its_admin_api_url_output(cloudformation: None) -> None:
    # Given a stack whose outputs name its admin API
    template = {
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {"AdminApiUrl": {"Value": f"{EXECUTE_API}/admin"}},
    }
    stacks: Any = botocore.session.get_session().create_client("cloudformation")
    stacks.create_stack(StackName="ops-test", TemplateBody=json.dumps(template))
    # When the command line looks it up by name
    endpoint = find_endpoint("ops-test", None, None)
    # Then it signs for the API's own region, with the caller's credentials
    assert (endpoint.base_url, endpoint.region) == (f"{EXECUTE_API}/admin", "eu-west-1")
    assert endpoint.session is not None


def test_an_unknown_stack_fails_in_one_line(cloudformation: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stack", "no-such-stack", "stats"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("ucoauth: cannot read the stack no-such-stack:") and err.count("\n") == 1


def test_requests_are_signed_for_the_endpoints_region_with_the_callers_credentials() -> None:
    opener = CannedOpener([(200, {"installations": {}}, {})])
    client = AdminClient(Endpoint(f"{EXECUTE_API}/admin", "eu-west-1", local_session()), opener)
    assert client.ok("GET", "/stats") == {"installations": {}}
    (sent,) = opener.requests
    assert sent.full_url == f"{EXECUTE_API}/admin/stats"
    authorization = sent.get_header("Authorization")
    assert authorization is not None and authorization.startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization


def test_an_error_answer_is_one_line_with_its_exit_code_and_retry_after() -> None:
    opener = CannedOpener(
        [
            (503, {"error": "upstream_unavailable"}, {"retry-after": "7"}),
            (400, {"error": "invalid_limit"}, {}),
        ]
    )
    client = AdminClient(Endpoint(f"{EXECUTE_API}/admin", "eu-west-1", None), opener)
    with pytest.raises(CliError) as unavailable:
        client.ok("POST", "/installations/DEMO1/refresh")
    assert (str(unavailable.value), unavailable.value.code) == (
        "503 upstream_unavailable (retry after 7 s)",
        EXIT_FAILED,
    )
    with pytest.raises(CliError) as refused:
        client.ok("GET", "/installations", {"limit": "0"})
    assert (str(refused.value), refused.value.code) == ("400 invalid_limit", EXIT_USAGE)


def test_the_command_line_ships_with_the_client_not_in_the_lambda_layer() -> None:
    client = tomllib.loads((CLIENT_DIR / "pyproject.toml").read_text())
    assert client["project"]["scripts"] == {"ucoauth": "ucoauth_client.cli:main"}
    assert "ucoauth_client.cli" in client["tool"]["setuptools"]["packages"]
    layer = tomllib.loads((ROOT / "layers" / "ucoauth" / "pyproject.toml").read_text())
    assert "scripts" not in layer["project"]
    assert not (ROOT / "layers" / "ucoauth" / "ucoauth" / "cli.py").exists()
