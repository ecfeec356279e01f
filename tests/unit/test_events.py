"""events/ is ready for `sam local invoke` as it is: no placeholders, every file taken by a function
of the template without a crash or a 5xx, and an env.json with exactly the template's variables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.events import EVENTS, function_for
from devstack.resources import LocalResources, load_template, resources_of_type
from tests.support.lambdas import invoke, load_event
from ucoauth.adapters.services import Services
from ucoauth.base.settings import Settings, function_variables

EVENT_FILES = sorted(path.name for path in EVENTS.glob("*.json") if path.name != "env.json")
# The one event whose right answer is a 5xx: UltraCart said it is temporarily unavailable.
SERVER_ERRORS = {"callback-temporarily-unavailable.json": 503}
FUNCTIONS = sorted(resources_of_type(load_template(), "AWS::Serverless::Function"))


def test_no_event_holds_a_placeholder() -> None:
    for path in sorted(EVENTS.glob("*.json")):
        text = path.read_text()
        assert "REPLACE" not in text, path.name
        assert isinstance(json.loads(text), dict), path.name


def test_every_function_has_an_event_and_every_event_a_function() -> None:
    assert {function_for(name) for name in EVENT_FILES} == set(FUNCTIONS)


@pytest.mark.parametrize("name", EVENT_FILES)
def test_every_event_is_invokable_as_it_is(
    services: Services, aws: LocalResources, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # Given the file exactly as it is in events/ / When its function runs it
    answer: Any = invoke(function_for(name), load_event(name))
    # Then an answer, never a crash, and a server error only where it is the answer
    if isinstance(answer, dict) and "statusCode" in answer and answer["statusCode"] >= 500:
        assert SERVER_ERRORS.get(name) == answer["statusCode"], (name, answer)


def test_env_json_gives_every_function_exactly_the_templates_variables() -> None:
    content = json.loads((EVENTS / "env.json").read_text())
    assert sorted(content) == FUNCTIONS
    for logical_id, variables in content.items():
        assert set(variables) == {*function_variables(logical_id), "AWS_ENDPOINT_URL"}, logical_id
        assert all(isinstance(value, str) for value in variables.values()), logical_id
        Settings.for_function(logical_id, variables)  # parses: a cold start with these would not fail
