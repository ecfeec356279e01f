"""Run the template's handlers in this process, as Lambda would; ``python -m devstack.invoke``.

What ``sam local invoke`` does, without Docker: ``python -m devstack.invoke TokenApiFunction
events/tokens-get.json`` reads the running local stack's state file (written by ``python -m
devstack``), puts the functions' environment into this process, imports that function's handler
and prints what it returns.

The gateway and the queue runner load handlers with the same code (:class:`HandlerLoader`), so
a handler runs the same way whichever way it is reached.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from devstack.iam import acting_as
from devstack.resources import DEFAULT_REGION, ROOT, FunctionCode, function_handlers, function_timeouts

LAYER_DIR = ROOT / "layers" / "ucoauth"
STATE_PATH = ROOT / ".devstack" / "state.json"
STATE_ENV = "DEVSTACK_STATE"

# The fake credentials of the local stack: moto accepts any, the gateway verifies SigV4 with these.
LOCAL_ACCESS_KEY_ID = "testing"
LOCAL_SECRET_ACCESS_KEY = "testing"

# Variables that could point boto3 at a real account; the local stack never inherits them.
_AWS_VARIABLES_TO_DROP = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

Handler = Callable[[dict[str, Any], Any], Any]


def ensure_layer_importable() -> None:
    """Make ``ucoauth`` importable the way Lambda does with the layer (``/opt/python``)."""
    layer = str(LAYER_DIR)
    if layer not in sys.path:
        sys.path.insert(0, layer)


# --------------------------------------------------------------------------------------
# Loading handlers
# --------------------------------------------------------------------------------------
class HandlerLoader:
    """Imports each function's handler module once, under a name unique to its code directory.

    Every function's module is called ``app``; importing them by file under distinct names keeps
    them apart in ``sys.modules`` (as separate Lambda functions are).
    """

    def __init__(self, handlers: Mapping[str, FunctionCode]) -> None:
        self._code = dict(handlers)
        self._lock = threading.Lock()
        self._loaded: dict[str, Handler] = {}

    @property
    def logical_ids(self) -> list[str]:
        return list(self._code)

    def handler(self, logical_id: str) -> Handler:
        """The callable ``module.function`` of the function's ``Handler`` setting."""
        with self._lock:
            found = self._loaded.get(logical_id)
            if found is None:
                found = self._load(logical_id)
                self._loaded[logical_id] = found
            return found

    def load_all(self) -> None:
        """Import every handler now (a broken import shows at start, not on the first request)."""
        for logical_id in self._code:
            self.handler(logical_id)

    def _load(self, logical_id: str) -> Handler:
        code = self._code.get(logical_id)
        if code is None:
            raise KeyError(f"{logical_id} is not a function of the template")
        ensure_layer_importable()
        module_path, _, function_name = code.handler.rpartition(".")
        if not module_path or not function_name:
            raise ValueError(f"{logical_id}: Handler must be module.function, got {code.handler!r}")
        file = code.code_dir.joinpath(*module_path.split(".")).with_suffix(".py")
        module = _import_file(file, _module_name(code.code_dir, module_path))
        handler = getattr(module, function_name, None)
        if not callable(handler):
            raise AttributeError(f"{logical_id}: {file} has no callable {function_name!r}")
        return handler  # type: ignore[no-any-return]


def _module_name(code_dir: Path, module_path: str) -> str:
    try:
        relative = code_dir.relative_to(ROOT)
    except ValueError:
        relative = Path(code_dir.name)
    slug = re.sub(r"[^0-9A-Za-z_]", "_", "_".join((*relative.parts, module_path)))
    return f"devstack_fn_{slug}"


def _import_file(file: Path, name: str) -> ModuleType:
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@dataclass
class LambdaContext:
    """Enough of Lambda's context object for Powertools and the handlers."""

    function_name: str
    timeout_seconds: float = 3.0
    memory_limit_in_mb: int = 256
    function_version: str = "$LATEST"
    region: str = DEFAULT_REGION
    account_id: str = "123456789012"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)
    identity: Any = None
    client_context: Any = None

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/[{self.function_version}]{self.aws_request_id.replace('-', '')}"

    def get_remaining_time_in_millis(self) -> int:
        left = self.timeout_seconds - (time.monotonic() - self.started)
        return max(0, int(left * 1000))


class Invoker:
    """Runs handlers one at a time, like a Lambda execution environment.

    Every handler of the local stack shares one process, so the shared package's process-wide
    singletons (Powertools logger and metrics, the resolvers' ``current_event``) are shared too.
    A Lambda environment never runs two invocations at once; neither does this.
    """

    def __init__(
        self,
        loader: HandlerLoader,
        *,
        timeouts: Mapping[str, int] | None = None,
        region: str = DEFAULT_REGION,
        account_id: str = "123456789012",
        memory: Mapping[str, int] | None = None,
        environments: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.loader = loader
        # Each function's own environment, put in place for its invocations (None: the process's).
        self._environments = {k: dict(v) for k, v in (environments or {}).items()} or None
        # Each function's services as its last call left them (a warm container's process).
        self._warm: dict[str, Any] = {}
        self._timeouts = dict(timeouts or {})
        self._memory = dict(memory or {})
        self._region = region
        self._account_id = account_id
        self._lock = threading.Lock()

    def context(self, logical_id: str) -> LambdaContext:
        return LambdaContext(
            function_name=logical_id,
            timeout_seconds=float(self._timeouts.get(logical_id, 3)),
            memory_limit_in_mb=self._memory.get(logical_id, 256),
            region=self._region,
            account_id=self._account_id,
        )

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        """Call the handler; its exception propagates (the caller answers as AWS would)."""
        handler = self.loader.handler(logical_id)
        with self._lock:
            context = self.context(logical_id)
            try:
                # As the function: its clients sign with its role (when the local stack enforces roles).
                with self._environment_of(logical_id), acting_as(logical_id):
                    return handler(event, context)
            finally:
                if context.get_remaining_time_in_millis() == 0:
                    print(
                        f"devstack: {logical_id} ran past its Timeout ({context.timeout_seconds:g} s); "
                        "Lambda would have stopped it",
                        file=sys.stderr,
                    )

    @contextmanager
    def _environment_of(self, logical_id: str) -> Iterator[None]:
        """During the call, exactly the function's variables of the template (as Lambda gives
        them): the other functions' variables are removed, and the package's settings and
        services are the function's own. As a warm Lambda container keeps its process, the
        services a function built on an earlier call (and what they hold: the data keys it
        opened, the pace it knows spent) are put back for its next call, never another's."""
        if self._environments is None:
            yield
            return
        own = self._environments[logical_id]
        names = {name for environment in self._environments.values() for name in environment}
        previous = {name: os.environ.get(name) for name in names}
        for name in names - set(own):
            os.environ.pop(name, None)
        os.environ.update(own)
        _forget_configuration()
        _put_services(self._warm.get(logical_id))
        try:
            yield
        finally:
            self._warm[logical_id] = _built_services()
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _forget_configuration()


def _built_services() -> Any:
    """The package's process-wide services, if the call built them (None otherwise)."""
    module = sys.modules.get("ucoauth.adapters.services")
    return None if module is None else getattr(module, "_services", None)


def _put_services(services: Any) -> None:
    if services is not None:
        from ucoauth.adapters.services import set_services

        set_services(services)


def _forget_configuration() -> None:
    """Forget the parsed settings and the services built from them (not the AWS or UltraCart
    clients: they depend on nothing that differs between functions)."""
    ensure_layer_importable()
    import ucoauth

    ucoauth.reset(configuration_only=True)


def template_invoker(
    template: Mapping[str, Any],
    *,
    region: str = DEFAULT_REGION,
    account_id: str = "123456789012",
    environments: Mapping[str, Mapping[str, str]] | None = None,
) -> Invoker:
    """An invoker for every function of the template, with the template's timeouts and memory
    (and, with ``environments``, each function's own environment during its invocations)."""
    memory_default = int(template.get("Globals", {}).get("Function", {}).get("MemorySize", 128))
    memory = {
        logical_id: int(resource.get("Properties", {}).get("MemorySize", memory_default))
        for logical_id, resource in template["Resources"].items()
        if resource.get("Type") == "AWS::Serverless::Function"
    }
    return Invoker(
        HandlerLoader(function_handlers(template)),
        timeouts=function_timeouts(template),
        region=region,
        account_id=account_id,
        memory=memory,
        environments=environments,
    )


# --------------------------------------------------------------------------------------
# The process environment
# --------------------------------------------------------------------------------------
def aws_environment(
    endpoint_url: str, region: str = DEFAULT_REGION, credentials: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Variables that point every boto3 client at the local AWS with ``credentials`` (a state
    file's ``access_key``/``secret_key``/``token``: the harness's or a function's role session),
    or the fake ones that work while the local AWS enforces nothing."""
    credentials = credentials or {"access_key": LOCAL_ACCESS_KEY_ID, "secret_key": LOCAL_SECRET_ACCESS_KEY}
    variables = {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": credentials["access_key"],
        "AWS_SECRET_ACCESS_KEY": credentials["secret_key"],
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        # Never read a developer's real profile or credentials file.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    if credentials.get("token"):
        variables["AWS_SESSION_TOKEN"] = str(credentials["token"])
    return variables


def apply_environment(variables: Mapping[str, str]) -> dict[str, str | None]:
    """Put ``variables`` into ``os.environ`` (dropping profile/session variables and per-service
    endpoint overrides), then forget the shared package's cached settings, services and clients.

    Returns the previous values, for :func:`restore_environment`.
    """
    dropped = [
        name
        for name in os.environ
        if name in _AWS_VARIABLES_TO_DROP or (name.startswith("AWS_ENDPOINT_URL_") and name not in variables)
    ]
    previous: dict[str, str | None] = {name: os.environ.get(name) for name in (*variables, *dropped)}
    for name in dropped:
        del os.environ[name]
    os.environ.update(variables)
    _reset_package()
    return previous


def restore_environment(previous: Mapping[str, str | None]) -> None:
    """Undo :func:`apply_environment`."""
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _reset_package()


def _reset_package() -> None:
    """Make the shared package re-read the environment on its next use (every cache it has)."""
    ensure_layer_importable()
    import ucoauth

    ucoauth.reset()


# --------------------------------------------------------------------------------------
# The running stack's state file
# --------------------------------------------------------------------------------------
class StackNotRunningError(RuntimeError):
    """No local stack is running (no state file, or its process is gone)."""


def state_path() -> Path:
    """Where ``python -m devstack`` writes its state (``DEVSTACK_STATE`` overrides)."""
    override = os.environ.get(STATE_ENV)
    return Path(override) if override else STATE_PATH


def load_state(path: Path | None = None) -> dict[str, Any]:
    """The running stack's state: URLs, ports, resource names and the functions' environment."""
    path = path or state_path()
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StackNotRunningError(
            f"no local stack state at {path}: start the stack first with `make dev`"
        ) from None
    pid = state.get("pid")
    if isinstance(pid, int) and not _process_alive(pid):
        raise StackNotRunningError(
            f"the local stack that wrote {path} (pid {pid}) is not running: start it with `make dev`"
        )
    return state


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------
# python -m devstack.invoke
# --------------------------------------------------------------------------------------
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.invoke",
        description="Invoke a function of template.yaml against the running local stack (sam local invoke).",
    )
    parser.add_argument("function", help="logical id in template.yaml, e.g. TokenApiFunction")
    parser.add_argument("event", help="event JSON file, e.g. events/tokens-get.json ('-' reads stdin)")
    parser.add_argument(
        "--set",
        dest="replacements",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set code, state, nonce (state cookie) or receipt (receipt cookie) in the event (repeatable)",
    )
    parser.add_argument("--state", type=Path, default=None, help="state file (default .devstack/state.json)")
    return parser.parse_args(argv)


# The values of an event that --set (and the tests) may change: query parameters and cookies.
_COOKIES = {"nonce": "__Host-ucoauth_state", "receipt": "__Host-ucoauth_receipt"}


def fill_event(event: dict[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """``event`` with ``code``/``state`` (query parameters) and ``nonce``/``receipt`` (their
    cookies) set to ``values``, where the event has them; other keys are refused."""
    unknown = set(values) - {"code", "state", *_COOKIES}
    if unknown:
        raise ValueError(f"--set knows code, state, nonce and receipt, not {sorted(unknown)}")
    query = event.get("queryStringParameters") or {}
    for key in ("code", "state"):
        if key in values and key in query:
            query[key] = values[key]
            parts = event["rawQueryString"].split("&")
            event["rawQueryString"] = "&".join(
                f"{key}={values[key]}" if part.split("=", 1)[0] == key else part for part in parts
            )
    for key, cookie in _COOKIES.items():
        if key in values and "cookies" in event:
            event["cookies"] = [
                f"{cookie}={values[key]}" if c.split("=", 1)[0] == cookie else c for c in event["cookies"]
            ]
    return event


def read_event(source: str, replacements: list[str]) -> dict[str, Any]:
    """The event file's JSON, with ``--set KEY=VALUE`` values filled in (:func:`fill_event`)."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    values: dict[str, str] = {}
    for item in replacements:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        values[key.lower()] = value
    event = json.loads(text)
    if not isinstance(event, dict):
        raise ValueError("the event must be a JSON object")
    return fill_event(event, values)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # The handlers' logs and metrics go to stderr (as sam local invoke shows them); stdout carries
    # only the result, so it can be piped to jq. Powertools binds its stream when it is imported.
    result_stream = sys.stdout
    sys.stdout = sys.stderr
    try:
        return _invoke(args, result_stream)
    finally:
        sys.stdout = result_stream


def _invoke(args: argparse.Namespace, result_stream: Any) -> int:
    try:
        state = load_state(args.state)
        event = read_event(args.event, args.replacements)
    except (StackNotRunningError, OSError, ValueError) as exc:
        print(f"devstack.invoke: {exc}", file=sys.stderr)
        return 2
    from devstack.resources import load_template

    template = load_template()
    invoker = template_invoker(
        template, region=str(state.get("region", DEFAULT_REGION)), account_id=str(state.get("account_id"))
    )
    if args.function not in invoker.loader.logical_ids:
        known = ", ".join(invoker.loader.logical_ids)
        print(f"devstack.invoke: unknown function {args.function!r} (one of: {known})", file=sys.stderr)
        return 2
    # The function's own environment (a state file of an older stack has only the shared one).
    environment = state.get("environments", {}).get(args.function, state["environment"])
    # Signed as the function's role, as Lambda gives a function its role's session in these variables.
    credentials = state.get("credentials", {}).get("functions", {}).get(args.function)
    apply_environment({**environment, **aws_environment(state["moto_url"], state["region"], credentials)})
    try:
        result = invoker.invoke(args.function, event)
    except Exception:
        traceback.print_exc()
        print(
            f"devstack.invoke: {args.function} raised (Lambda would report it as an error)", file=sys.stderr
        )
        return 1
    print(json.dumps(result, indent=2, default=str), file=result_stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
