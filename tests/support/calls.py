"""Count the AWS API calls the package makes (botocore event hooks on its own clients)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ucoauth.adapters import aws

SERVICES = ("dynamodb", "kms", "sqs", "events", "secretsmanager")


class AwsCallCounter:
    """Records ``service.Operation`` for every API call made through ``ucoauth.adapters.aws`` clients."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        for service in SERVICES:
            # Each client has its own event system: "before-call" there is only its calls.
            aws.client(service).meta.events.register("before-call", self._recorder(service))

    def _recorder(self, service: str) -> Any:
        def record(event_name: str, **_: Any) -> None:
            # event_name is "before-call.<service id>.<Operation>"
            self.calls.append(f"{service}.{event_name.rsplit('.', 1)[1]}")

        return record

    def reset(self) -> None:
        self.calls.clear()

    @property
    def count(self) -> int:
        return len(self.calls)

    def by_operation(self) -> Counter[str]:
        return Counter(self.calls)
