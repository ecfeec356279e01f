"""What every benchmark shares: paths, the functions' environment, moto's server and the sandbox."""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
# What a Lambda sees on sys.path (the layer's package) plus the local tools and the repository root.
PYTHONPATH = [str(ROOT / "layers" / "ucoauth"), str(ROOT / "local"), str(ROOT)]
REGION = "us-east-1"

FUNCTIONS: dict[str, str] = {
    "OAuthBrowserFunction": "oauth_browser",
    "TokenApiFunction": "token_api",
    "UninstallWebhookFunction": "uninstall_webhook",
    "RefreshPlannerFunction": "refresh_planner",
    "RefreshWorkerFunction": "refresh_worker",
    "RevokeWorkerFunction": "revoke_worker",
    "AdminApiFunction": "admin_api",
    "DeviceFlowFunction": "device_flow",
    "DeviceWorkerFunction": "device_worker",
}

if TYPE_CHECKING:
    from devstack.resources import LocalResources
    from ucsandbox import Sandbox


def use_project_paths() -> None:
    """Make ``ucoauth``, ``devstack``, ``ucsandbox`` and ``tests.support`` importable."""
    for path in reversed(PYTHONPATH):
        if path not in sys.path:
            sys.path.insert(0, path)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ours, the project's PYTHONPATH, fake AWS credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON"))}
    env.update(fake_aws_credentials())
    env["PYTHONPATH"] = os.pathsep.join(PYTHONPATH)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def fake_aws_credentials() -> dict[str, str]:
    """Fake credentials and region; no profile or config file, so no real account is reachable."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def set_process_aws_env(extra: Mapping[str, str] | None = None) -> None:
    """Point this process's boto3 at fake credentials (and ``extra``, e.g. AWS_ENDPOINT_URL)."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update(fake_aws_credentials())
    os.environ.update(extra or {})


def quiet_servers() -> None:
    """moto's server logs every request through werkzeug; a benchmark wants none of that."""
    for name in ("werkzeug", "botocore", "boto3", "urllib3", "moto"):
        logging.getLogger(name).setLevel(logging.ERROR)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def progress(message: str) -> None:
    """Progress goes to stderr; stdout carries the one summary table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- the live stack: moto's server + template resources + the UltraCart sandbox ------------------


@dataclass
class Live:
    """moto's server with template.yaml's resources, and a started UltraCart sandbox."""

    endpoint_url: str
    resources: LocalResources
    sandbox: Sandbox
    moto_pid: int

    def function_env(self, logical_id: str, **overrides: str) -> dict[str, str]:
        """A function's environment from the template, pointed at moto's server and the sandbox."""
        env = self.resources.function_environment(logical_id)
        local = {
            "ULTRACART_BASE_URL": self.sandbox.base_url,
            "ULTRACART_CLIENT_ID": self.sandbox.client_id,
            "OAUTH_REDIRECT_URI": "http://localhost:3000/oauth/callback",
            "ULTRACART_CONNECT_TIMEOUT": "2",
            "ULTRACART_READ_TIMEOUT": "5",
        }
        # Only the variables the function has: each function gets its own environment.
        env.update({name: value for name, value in local.items() if name in env})
        env.update(overrides)
        env.update(fake_aws_credentials())
        env["AWS_ENDPOINT_URL"] = self.endpoint_url
        return env

    def reset(self) -> None:
        """A fresh moto (resources recreated from the template) and a fresh sandbox."""
        import boto3

        from devstack.resources import create_resources

        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        self.resources = create_resources(
            boto3.Session(region_name=REGION), endpoint_url=self.endpoint_url, stage="bench"
        )
        self.sandbox.reset()


# The moto whose SQS Queue and SQSBackend patch_moto_sqs_scans replaces parts of.
MOTO_SQS_SCANS_WRITTEN_FOR = "5.2.5"


def patch_moto_sqs_scans() -> None:
    """Read the clock once per queue scan in moto's SQS, instead of twice per message.

    moto 5.2.5 answers "is this message visible / delayed" by reading its clock (a datetime
    round trip of a few microseconds) per message, scans the whole queue three times to compute
    the queue's attributes, and computes them for every message it sends (content-based
    deduplication check) and every message it returns (retention check). Sending or receiving
    is then O(depth) clock reads per message: queueing 1,000 refreshes took 12 s and one receive
    of 5 messages from a 2,000-deep queue ~600 ms, where SQS takes milliseconds, so the
    emulator, not the code under test, would set the refresh rate. The replacements compute the
    same answers (a message is visible when now > visible_at, delayed while now < delayed_until;
    retained while sent + MessageRetentionPeriod > now) with one clock reading per call.

    The replacements are read against moto's private queue internals: on another moto than the one
    they were written for this raises ``devstack.pinned.UnpinnedInternalsError`` and patches nothing.
    """
    import importlib

    from devstack.pinned import require_version

    require_version("moto", MOTO_SQS_SCANS_WRITTEN_FOR, "bench.common.patch_moto_sqs_scans")
    from moto.core.utils import unix_time, unix_time_millis

    models: Any = importlib.import_module("moto.sqs.models")
    queue_class: Any = models.Queue
    backend_class: Any = models.SQSBackend

    def visible(queue: Any) -> list[Any]:
        now = unix_time_millis()
        return [m for m in queue._messages if now > m.visible_at and not now < m.delayed_until]

    def not_visible(queue: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in queue._messages if not now > m.visible_at)

    def delayed(queue: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in queue._messages if now < m.delayed_until)

    def retained(backend: Any, queue_name: str, message: Any) -> bool:
        queue = backend.get_queue(queue_name)
        return bool(int(queue.message_retention_period) + float(message.sent_timestamp) / 1000 > unix_time())

    queue_class.messages = property(visible)
    queue_class.approximate_number_of_messages = property(lambda queue: len(visible(queue)))
    queue_class.approximate_number_of_messages_not_visible = property(not_visible)
    queue_class.approximate_number_of_messages_delayed = property(delayed)
    backend_class.is_message_valid_based_on_retention_period = retained


@contextmanager
def moto_server() -> Iterator[tuple[str, int]]:
    """moto's ThreadedMotoServer on 127.0.0.1 (free port) in a child process: (endpoint, pid)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.moto_process"],
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip()
        if not endpoint.startswith("http://"):
            raise RuntimeError("moto's server did not start")
        yield endpoint, process.pid
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=10)


@contextmanager
def live_stack() -> Iterator[Live]:
    """moto's server with the template's resources, and an UltraCart sandbox, on 127.0.0.1."""
    use_project_paths()
    quiet_servers()
    set_process_aws_env()
    import boto3

    from devstack.resources import create_resources
    from ucsandbox import Sandbox

    with moto_server() as (endpoint, pid):
        resources = create_resources(boto3.Session(region_name=REGION), endpoint_url=endpoint, stage="bench")
        with Sandbox() as sandbox:
            yield Live(endpoint_url=endpoint, resources=resources, sandbox=sandbox, moto_pid=pid)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wire_process(env: Mapping[str, str]) -> Any:
    """Point this process's ucoauth at ``env`` (as a cold Lambda would build it); returns Services."""
    import ucoauth
    from ucoauth.adapters.services import Services, set_services
    from ucoauth.base.settings import Settings

    os.environ.update(env)
    ucoauth.reset()
    services = Services.from_settings(Settings.from_env(env))
    set_services(services)
    return services
