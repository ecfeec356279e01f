"""The whole system on loopback: moto with template.yaml's resources, the UltraCart sandbox and the
local HttpApi gateway, with the functions' environment in this process.

>>> with LocalStack() as stack:                       # every port 0: free ports (tests)
...     requests.get(f"{stack.gateway_url}/install", allow_redirects=False)

One process runs every handler: each invocation runs with exactly its function's environment
from the template in ``os.environ`` (the invoker swaps it in and out), and between invocations
the process holds every function's variables together. Browser-facing URLs use ``localhost``:
Chromium treats ``http://localhost`` as a secure context, so the ``__Host-`` state cookie
(``Secure``) works without TLS. Sockets bind 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from devstack import iam
from devstack.gateway import Gateway
from devstack.invoke import (
    LOCAL_ACCESS_KEY_ID,
    LOCAL_SECRET_ACCESS_KEY,
    Invoker,
    apply_environment,
    aws_environment,
    ensure_layer_importable,
    restore_environment,
    template_invoker,
)
from devstack.motolock import serialize_dynamodb
from devstack.resources import (
    DEFAULT_REGION,
    LocalResources,
    create_resources,
    http_routes,
    load_template,
    resources_of_type,
)
from devstack.runner import Runner
from devstack.translate import translate

HOST = "127.0.0.1"
PUBLIC_HOST = "localhost"


class StackError(RuntimeError):
    """The local stack cannot start as configured."""


class _MotoServer(ThreadedMotoServer):
    """ThreadedMotoServer that reports a bind failure instead of waiting for it forever."""

    error: BaseException | None = None

    def _server_entry(self) -> None:
        try:
            super()._server_entry()
        except BaseException as exc:
            self.error = exc
            self._server_ready_event.set()


def function_environments(
    resources: LocalResources, local: Mapping[str, str] | None = None
) -> dict[str, dict[str, str]]:
    """Each function's environment from the template, with the ``local`` values (the sandbox's URL
    and client id, the gateway's callback) replacing the template's for the variables it has."""
    environments: dict[str, dict[str, str]] = {}
    for logical_id in resources_of_type(resources.template, "AWS::Serverless::Function"):
        environment = resources.function_environment(logical_id)
        environment.update({name: value for name, value in (local or {}).items() if name in environment})
        environments[logical_id] = environment
    if not environments:
        raise StackError("template.yaml has no AWS::Serverless::Function")
    return environments


class LocalStack:
    """moto + resources + UltraCart sandbox + gateway on 127.0.0.1; ``start()``/``stop()`` or ``with``.

    Ports 0 pick free ports. ``ULTRACART_BASE_URL`` in the environment (with
    ``ULTRACART_CLIENT_ID``) points the stack at that UltraCart instead of starting the sandbox.
    """

    _active_lock = threading.Lock()
    _active: LocalStack | None = None

    def __init__(
        self,
        *,
        moto_port: int = 0,
        gateway_port: int = 0,
        sandbox_port: int = 0,
        stage: str = "local",
        parameters: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        schedule_seconds: float | None = None,
        enforce_roles: bool = True,
    ) -> None:
        self.moto_port = moto_port
        self.gateway_port = gateway_port
        self.sandbox_port = sandbox_port
        self.stage = stage
        self.schedule_seconds = schedule_seconds
        self._parameters = dict(parameters or {})
        # What decides sandbox or real UltraCart: read once, before the stack changes os.environ.
        source = os.environ if environ is None else environ
        self._external_base_url = source.get("ULTRACART_BASE_URL", "").strip() or None
        self._external_client_id = source.get("ULTRACART_CLIENT_ID", "").strip() or None

        self.template: dict[str, Any] = load_template()
        self.sandbox: Any = None  # ucsandbox.Sandbox, or None against a real UltraCart
        self._moto: _MotoServer | None = None
        self._gateway: Gateway | None = None
        self._resources: LocalResources | None = None
        self._runner: Runner | None = None
        self._invoker: Invoker | None = None
        self._previous_env: dict[str, str | None] | None = None
        self.environment: dict[str, str] = {}
        self.environments: dict[str, dict[str, str]] = {}
        self.moto_url = ""
        # Every function's role enforced (devstack.iam): the checker of their calls, and the
        # credentials the local AWS knows (None until the roles exist, or with enforce_roles=False).
        self.enforce_roles = enforce_roles
        self.checker: iam.PolicyChecker | None = None
        self.identities: iam.Identities | None = None
        self._enforcement: contextlib.ExitStack | None = None

    # -- what tests and tools use -------------------------------------------------------------

    @classmethod
    def running(cls) -> LocalStack | None:
        """The stack running in this process, if any (one at a time: os.environ is shared)."""
        return cls._active

    def _invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        """The gateway's way in (the invoker is made once the gateway's URL is known)."""
        if self._invoker is None:
            raise StackError("local stack not started")
        return self._invoker.invoke(logical_id, event)

    @property
    def resources(self) -> LocalResources:
        if self._resources is None:
            raise RuntimeError("local stack not started")
        return self._resources

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            raise RuntimeError("local stack not started")
        return self._runner

    @property
    def invoker(self) -> Invoker:
        if self._invoker is None:
            raise RuntimeError("local stack not started")
        return self._invoker

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            raise RuntimeError("local stack not started")
        return self._gateway

    @property
    def gateway_url(self) -> str:
        """``http://localhost:PORT``."""
        return self.gateway.url

    @property
    def ultracart_base_url(self) -> str:
        return self.environment["ULTRACART_BASE_URL"]

    def session(self, function: str | None = None) -> boto3.Session:
        """A boto3 session of the local AWS (use ``endpoint_url=stack.moto_url``): the harness's,
        allowed everything, or with ``function`` that function's role session. Before the roles
        exist (or without enforcement) the fake credentials."""
        if self.identities is None:
            if function is not None:
                raise StackError("roles are not enforced in this stack: no function credentials")
            return boto3.Session(
                aws_access_key_id=LOCAL_ACCESS_KEY_ID,
                aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY,
                region_name=DEFAULT_REGION,
            )
        found = self.identities.harness if function is None else self.identities.functions[function]
        return boto3.Session(
            aws_access_key_id=found.access_key,
            aws_secret_access_key=found.secret_key,
            aws_session_token=found.token,
            region_name=DEFAULT_REGION,
        )

    def take_violations(self) -> list[iam.Violation]:
        """The calls a function made that its role does not allow, since the last take (and forget them)."""
        return [] if self.checker is None else self.checker.take_violations()

    def client(self, service: str) -> Any:
        """A boto3 client of the local AWS."""
        return self.session().client(service, endpoint_url=self.moto_url)  # type: ignore[call-overload]

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> LocalStack:
        with LocalStack._active_lock:
            if LocalStack._active is not None:
                raise StackError("a local stack is already running in this process (os.environ is shared)")
            LocalStack._active = self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        ensure_layer_importable()
        # 1. AWS: moto's server and the template's resources in it.
        serialize_dynamodb()  # one write at a time per item, as DynamoDB does
        moto = _MotoServer(ip_address=HOST, port=self.moto_port, verbose=False)
        self._moto = moto
        moto.start()
        if moto.error is not None:
            self._moto = None
            # werkzeug exits (SystemExit) when the port is taken, after printing why.
            reason = "address already in use" if isinstance(moto.error, SystemExit) else moto.error
            raise StackError(f"moto could not listen on {HOST}:{self.moto_port}: {reason}") from moto.error
        host, port = moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"

        # 2. UltraCart: the sandbox, unless the environment names a real one.
        if self._external_base_url is None:
            from ucsandbox import Sandbox

            client_id = self._parameters.get("UltraCartClientId", "sandbox-client-id")
            sandbox = Sandbox(host=HOST, port=self.sandbox_port, client_id=client_id)
            try:
                sandbox.start()
            except OSError as exc:
                raise StackError(
                    f"the UltraCart sandbox could not listen on {HOST}:{self.sandbox_port}: {exc}"
                ) from exc
            self.sandbox = sandbox
            base_url, client_id = sandbox.base_url, sandbox.client_id
        else:
            if self._external_client_id is None:
                raise StackError(
                    "ULTRACART_BASE_URL is set: set ULTRACART_CLIENT_ID to your app's client id too"
                )
            base_url, client_id = self._external_base_url.rstrip("/"), self._external_client_id
        parameters = {**self._parameters, "UltraCartBaseUrl": base_url, "UltraCartClientId": client_id}
        try:
            resources = create_resources(
                self.session(), endpoint_url=self.moto_url, stage=self.stage, parameters=parameters
            )
        except ValueError as exc:  # a parameter the template refuses (e.g. a non-https UltraCart)
            raise StackError(str(exc)) from exc
        self._resources = resources
        if self.enforce_roles:
            self._enforce(resources)

        # 3. The gateway (bound now: the redirect URI names its port).
        try:
            gateway = Gateway(
                http_routes(self.template),
                self._invoke,
                # The fake credentials (curl, the README) and the harness's, which moto's IAM knows too.
                credentials={
                    LOCAL_ACCESS_KEY_ID: LOCAL_SECRET_ACCESS_KEY,
                    **(
                        {}
                        if self.identities is None
                        else {self.identities.harness.access_key: self.identities.harness.secret_key}
                    ),
                },
                host=HOST,
                port=self.gateway_port,
                region=resources.region,
                account_id=resources.account_id,
                public_host=PUBLIC_HOST,
            )
        except OSError as exc:
            raise StackError(f"the gateway could not listen on {HOST}:{self.gateway_port}: {exc}") from exc
        self._gateway = gateway

        # 4. Each function's environment (swapped in for its invocations), and every function's
        # variables together in this process between invocations.
        self.environments = function_environments(
            resources,
            {
                "ULTRACART_BASE_URL": base_url,
                "ULTRACART_CLIENT_ID": client_id,
                "OAUTH_REDIRECT_URI": f"{gateway.url}/oauth/callback",
            },
        )
        self.environment = {k: v for env in self.environments.values() for k, v in env.items()}
        invoker = template_invoker(
            self.template,
            region=resources.region,
            account_id=resources.account_id,
            environments=self.environments,
        )
        self._invoker = invoker
        self._previous_env = apply_environment(
            {**self.environment, **aws_environment(self.moto_url, resources.region, self._credentials(None))}
        )
        if self.identities is not None:
            from ucoauth.adapters import aws

            # Every client of the package signs as the function being run (the invoker says which).
            aws.set_session(iam.identity_session())
        # Imported with the environment in place, as Lambda imports them (Powertools reads it then).
        invoker.loader.load_all()
        self._runner = Runner(
            resources,
            invoker.invoke,
            schedule_seconds=self.schedule_seconds,
            event_source_client=self.event_source_client if self.identities is not None else None,
        )
        gateway.start()

    def _enforce(self, resources: LocalResources) -> None:
        """Every function's role from the translated template, in moto's IAM, enforced."""
        translated = translate()  # the roles' shape; conditions and ARNs resolve to this stack below
        roles = iam.function_roles(translated, resources.resolve)
        self.checker = iam.PolicyChecker(
            roles, iam.names_of(resources), iam.key_policy_denies(self.template, resources.resolve)
        )
        unsigned = self.session()
        self.identities = iam.provision(
            unsigned.client("iam", endpoint_url=self.moto_url),
            unsigned.client("sts", endpoint_url=self.moto_url),
            roles,
            prefix=resources.stack_name,
        )
        stack = contextlib.ExitStack()
        stack.enter_context(iam.enforced(self.identities, self.checker))
        self._enforcement = stack

    def _credentials(self, function: str | None) -> dict[str, str] | None:
        if self.identities is None:
            return None
        found = self.identities.harness if function is None else self.identities.functions[function]
        return {"access_key": found.access_key, "secret_key": found.secret_key, "token": found.token or ""}

    def event_source_client(self, function: str) -> Any:
        """The SQS client of a function's event source mapping: signed with the function's role
        (Lambda's poller uses it), its calls checked against that role."""
        client = self.session(function).client("sqs", endpoint_url=self.moto_url)
        iam.attach_checks(client.meta.events, identity=function)
        return client

    def stop(self) -> None:
        """Stop everything that was started, restore the environment (idempotent)."""
        try:
            if self._runner is not None:
                self._runner.stop()
            if self._gateway is not None:
                self._gateway.stop()
                self._gateway = None
            if self.sandbox is not None:
                self.sandbox.stop()
            if self._moto is not None:
                self._moto.stop()
                self._moto = None
        finally:
            if self._enforcement is not None:
                self._enforcement.close()
                self._enforcement = None
                from ucoauth.adapters import aws

                aws.set_session(None)
            if self._previous_env is not None:
                restore_environment(self._previous_env)
                self._previous_env = None
            with LocalStack._active_lock:
                if LocalStack._active is self:
                    LocalStack._active = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the state file (python -m devstack.invoke / sign_webhook read it) -----------------------

    def state(self) -> dict[str, Any]:
        """URLs, ports, resource names and the functions' environment (no secret values)."""
        resources = self.resources
        queues = resources_of_type(resources.template, "AWS::SQS::Queue")
        return {
            "pid": os.getpid(),
            "gateway_url": self.gateway_url,
            "install_url": f"{self.gateway_url}/install",
            "ultracart_base_url": self.ultracart_base_url,
            "sandbox_url": None if self.sandbox is None else self.sandbox.url,
            "moto_url": self.moto_url,
            "ports": {
                "gateway": self.gateway.port,
                "sandbox": None if self.sandbox is None else self.sandbox.port,
                "moto": int(self.moto_url.rsplit(":", 1)[1]),
            },
            "region": resources.region,
            "account_id": resources.account_id,
            "stack_name": resources.stack_name,
            "table_name": resources.table_name,
            "queue_urls": {logical_id: resources.queue_url(logical_id) for logical_id in queues},
            "events_observer_queue_url": resources.events_observer_queue_url,
            "webhook_secret_arn": resources.webhook_secret_arn,
            # Local fake credentials of the local AWS (moto's IAM), for the tools run beside it.
            "credentials": None
            if self.identities is None
            else {
                "harness": self._credentials(None),
                "functions": {name: self._credentials(name) for name in self.identities.functions},
            },
            "environment": dict(self.environment),
            "environments": {logical_id: dict(env) for logical_id, env in self.environments.items()},
        }

    def write_state(self, path: Path) -> None:
        """Write :meth:`state` as JSON (readable by the owner only)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.state(), indent=2) + "\n", encoding="utf-8")
        temporary.chmod(0o600)
        temporary.replace(path)
