"""template.yaml translated to plain CloudFormation the way ``sam deploy`` does it (samtranslator).

The serverless resources (functions, their roles and event sources, the HttpApi, the schedule)
only exist after the transform; what CloudFormation receives is what these helpers return.
No network: local ``CodeUri``/``ContentUri`` are replaced by S3 URIs as ``sam validate`` does,
and the managed-policy map is a stub (the template names no managed policy). The local stack
builds each function's enforced role from it (:mod:`devstack.iam`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from devstack.resources import load_template

# Parameters CloudFormation needs a value for (no default): any valid value does here.
REQUIRED_PARAMETERS: Mapping[str, str] = {"UltraCartClientId": "client-id"}
_FAKE_S3 = "s3://translated-bucket/artifact.zip"


REGION = "us-east-1"


def _no_managed_policies() -> dict[str, str]:
    """The template attaches no AWS managed policy by name, so the map can stay empty."""
    return {}


def _with_s3_code(template: Mapping[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(dict(template))
    for resource in document["Resources"].values():
        properties = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(properties.get("CodeUri"), str):
            properties["CodeUri"] = _FAKE_S3
        if resource.get("Type") == "AWS::Serverless::LayerVersion" and isinstance(
            properties.get("ContentUri"), str
        ):
            properties["ContentUri"] = _FAKE_S3
    return document


def translate(
    template: Mapping[str, Any] | None = None, *, parameters: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The CloudFormation template ``sam deploy`` would submit for ``template`` (default: template.yaml)."""
    if template is None and parameters is None:
        return copy.deepcopy(_translated_default())
    source = _with_s3_code(template if template is not None else load_template())
    values = {**REQUIRED_PARAMETERS, **(parameters or {})}
    # What samtranslator's transform() does, with a region given instead of read from the machine.
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=REGION))
    translated: dict[str, Any] = translator.translate(
        source, parameter_values=values, get_managed_policy_map=_no_managed_policies
    )
    return translated


@cache
def _translated_default() -> dict[str, Any]:
    return translate(load_template(), parameters={})


def of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    """Logical id -> resource for every resource of ``resource_type``."""
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource.get("Type") == resource_type
    }


def walk(value: Any) -> Iterator[Any]:
    """Every dict, list and scalar inside ``value`` (depth first)."""
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)
