"""Cold-ready time: a fresh interpreter per run, round-robin over every candidate, medians of N.

Each run is ``python -m bench.cold_child CANDIDATE`` with the template's environment (fake
names and ARNs, fake credentials: nothing reaches the network). Three times are kept: the
child's own ``perf_counter`` from its first line to ready, spawn-to-ready (adds the
interpreter's start-up), and the whole subprocess (the child exits with ``os._exit`` right after
reporting, as a frozen Lambda environment never runs interpreter teardown).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import FUNCTIONS, PYTHONPATH, ROOT, child_env, median, progress

TARGET_RATIO = 1.15
FLOOR = "floor"


@dataclass(frozen=True)
class Candidate:
    key: str  # unique in the table
    child: str  # what bench.cold_child builds
    label: str
    kind: str  # "floor" | "peer" | "function" | "no_pyc" | "diagnostic"
    no_pyc: bool = False


def candidates() -> list[Candidate]:
    found = [
        Candidate(FLOOR, "floor", "floor: boto3 + DynamoDB and KMS clients", "floor"),
        Candidate(
            "powertools_peer",
            "powertools_peer",
            "peer: textbook Powertools handler (Logger, Tracer, Metrics, APIGatewayHttpResolver) + 2 clients",
            "peer",
        ),
        Candidate(
            "ultracart_sdk_peer",
            "ultracart_sdk_peer",
            "peer: ultracart-rest-sdk (OauthApi + ApiClient) + 2 clients",
            "peer",
        ),
    ]
    found += [
        Candidate(directory, directory, logical_id, "function") for logical_id, directory in FUNCTIONS.items()
    ]
    found += [
        Candidate(
            "token_api@no_pyc",
            "token_api",
            "TokenApiFunction, layer without .pyc",
            "no_pyc",
            no_pyc=True,
        ),
        Candidate(
            "powertools_peer@no_pyc",
            "powertools_peer",
            "Powertools peer, its packages without .pyc",
            "no_pyc",
            no_pyc=True,
        ),
        Candidate(
            "diag_one_session",
            "diag_one_session",
            "diagnostic: boto3 + 5 clients from one session",
            "diagnostic",
        ),
        Candidate(
            "diag_session_each",
            "diag_session_each",
            "diagnostic: boto3 + 5 clients, one session each",
            "diagnostic",
        ),
    ]
    return found


# Fakes for the resources the template creates: names and ARNs only, nothing reachable.
_ACCOUNT = "123456789012"
_FAKE_RESOURCES = {
    "InstallationsTable": "bench-InstallationsTable",
    "TokenKey": f"arn:aws:kms:us-east-1:{_ACCOUNT}:key/00000000-0000-4000-8000-000000000000",
    "RefreshQueue": f"https://sqs.us-east-1.amazonaws.com/{_ACCOUNT}/bench-RefreshQueue",
    "RevokeQueue": f"https://sqs.us-east-1.amazonaws.com/{_ACCOUNT}/bench-RevokeQueue",
    "RefreshDeadLetterQueue": f"https://sqs.us-east-1.amazonaws.com/{_ACCOUNT}/bench-RefreshDeadLetterQueue",
    "RevokeDeadLetterQueue": f"https://sqs.us-east-1.amazonaws.com/{_ACCOUNT}/bench-RevokeDeadLetterQueue",
    "UninstallWebhookSecret": f"arn:aws:secretsmanager:us-east-1:{_ACCOUNT}:secret:bench-webhook-AbCdEf",
}


def fake_function_env(logical_id: str | None = None) -> dict[str, str]:
    """A function's environment (Globals and its own; every function's together without one),
    with fake resources (no create_resources, no network)."""
    from devstack.resources import load_template, parameter_values, resources_of_type

    template = load_template()
    parameters = parameter_values(template, stage="bench")
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    functions = resources_of_type(template, "AWS::Serverless::Function")
    for name in functions if logical_id is None else [logical_id]:
        variables.update(functions[name]["Properties"].get("Environment", {}).get("Variables", {}))
    env: dict[str, str] = {}
    for name, value in variables.items():
        if isinstance(value, str | int | float):
            env[name] = str(value)
            continue
        if "Fn::If" in value:  # EVENT_BUS_NAME: the stack's own bus or a named one
            value = value["Fn::If"][2]
        if "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
            env[name] = value["Fn::Sub"].replace("${AWS::StackName}", "ucoauth-bench")
        elif "Ref" in value:
            ref = value["Ref"]
            env[name] = parameters[ref] if ref in parameters else _FAKE_RESOURCES[ref]
        elif "Fn::GetAtt" in value:
            env[name] = _FAKE_RESOURCES[value["Fn::GetAtt"][0]]
        else:
            raise ValueError(f"{name}: no fake for {value}")
    # What Lambda sets for every function (Powertools reads some of these; with LAMBDA_TASK_ROOT
    # set, the peer's Tracer is enabled and patches botocore, as it would in Lambda).
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": "bench",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "LAMBDA_TASK_ROOT": str(ROOT),
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        }
    )
    return env


# -- the layer without bytecode: what Lambda compiles at every cold start when a build ships no .pyc --


def layer_build_compiles_bytecode() -> bool:
    """Whether the template's layer build compiles bytecode (SAM's python builder does not)."""
    from devstack.resources import load_template

    layer = load_template()["Resources"].get("SharedLayer", {})
    if layer.get("Metadata", {}).get("BuildMethod") != "makefile":
        return False
    makefile = ROOT / str(layer.get("Properties", {}).get("ContentUri", "layers/ucoauth/")) / "Makefile"
    return makefile.exists() and "compileall" in makefile.read_text()


# Provided by the Lambda runtime, not installed into the layer.
_RUNTIME = {"boto3", "botocore", "s3transfer"}


def _layer_distributions(extra: list[str]) -> list[Any]:
    from importlib import metadata

    from packaging.requirements import Requirement

    wanted = [
        line.split("#")[0].strip()
        for line in (ROOT / "layers" / "ucoauth" / "requirements.txt").read_text().splitlines()
    ]
    queue = [Requirement(line) for line in wanted if line] + [Requirement(name) for name in extra]
    seen: dict[str, Any] = {}
    while queue:
        requirement = queue.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in seen or name in _RUNTIME:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        distribution = metadata.distribution(name)
        seen[name] = distribution
        queue += [Requirement(text) for text in distribution.requires or []]
    return list(seen.values())


def build_without_bytecode(target: Path) -> tuple[Path, Path]:
    """A layer directory and a functions directory without any .pyc."""
    layer, functions = target / "python", target / "functions"
    layer.mkdir(parents=True)
    # aws-xray-sdk: the Powertools peer's Tracer (powertools[tracer]) ships it in its layer.
    for distribution in _layer_distributions(extra=["aws-xray-sdk"]):
        for file in distribution.files or []:
            if file.suffix == ".pyc" or "__pycache__" in file.parts or ".." in file.parts:
                continue
            source = Path(str(distribution.locate_file(file)))
            if source.is_file():
                (layer / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, layer / file)
    shutil.copytree(
        ROOT / "layers" / "ucoauth" / "ucoauth",
        layer / "ucoauth",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(ROOT / "functions", functions, ignore=shutil.ignore_patterns("__pycache__"))
    return layer, functions


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class ColdResult:
    candidate: Candidate
    ready: list[float] = field(default_factory=list)
    spawn_to_ready: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    imports: list[float] = field(default_factory=list)
    clients: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.key,
            "label": self.candidate.label,
            "kind": self.candidate.kind,
            "ready_median": median(self.ready),
            "spawn_to_ready_median": median(self.spawn_to_ready),
            "wall_median": median(self.wall),
            "import_median": median(self.imports),
            "clients_median": median(self.clients),
            "runs": len(self.ready),
        }


def _one(python: str, candidate: Candidate, env: dict[str, str]) -> tuple[float, float, dict[str, float]]:
    """(whole subprocess wall time, spawn-to-ready wall time, the child's own measurements)."""
    spawned = time.time()
    started = time.perf_counter()
    answer = subprocess.run(
        [python, "-m", "bench.cold_child", candidate.child],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    wall = time.perf_counter() - started
    if answer.returncode != 0:
        raise RuntimeError(f"cold start of {candidate.key} failed:\n{answer.stderr[-2000:]}")
    inside: dict[str, float] = json.loads(answer.stdout.strip().splitlines()[-1])
    return wall, inside["ready_epoch"] - spawned, inside


def measure(rounds: int, scratch: Path, *, python: str = sys.executable) -> list[ColdResult]:
    """``rounds`` measured rounds after one discarded warm-up round; candidates interleaved."""
    layer, functions = build_without_bytecode(scratch / "no-pyc")
    logical_ids = {directory: logical_id for logical_id, directory in FUNCTIONS.items()}

    def env_of(candidate: Candidate) -> dict[str, str]:
        # Each function its own environment; the peers and the floor read none of it.
        env = child_env(fake_function_env(logical_ids.get(candidate.child)))
        if candidate.no_pyc:
            env["PYTHONPATH"] = ":".join([str(layer), *PYTHONPATH[1:]])
            env["BENCH_FUNCTIONS_ROOT"] = str(functions)
        else:
            # Bytecode may be written: the warm-up round caches .pyc for ucoauth and the handlers,
            # as a pip-installed package or a compiled layer has them. The no-pyc ones get none.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    listed = candidates()
    results = {candidate.key: ColdResult(candidate) for candidate in listed}
    for round_number in range(rounds + 1):
        # Rotate the order so no candidate always runs right after the same neighbour.
        shift = round_number % len(listed)
        for candidate in listed[shift:] + listed[:shift]:
            wall, to_ready, inside = _one(python, candidate, env_of(candidate))
            if round_number == 0:
                continue  # warm-up: page cache, .pyc files
            result = results[candidate.key]
            result.wall.append(wall)
            result.spawn_to_ready.append(to_ready)
            result.ready.append(inside["ready"])
            result.imports.append(inside["import"])
            result.clients.append(inside["clients"])
        if round_number and round_number % 3 == 0:
            progress(f"cold start: round {round_number}/{rounds}")
    return [results[candidate.key] for candidate in listed]


def import_profile(directory: str, *, python: str = sys.executable) -> dict[str, float]:
    """Self import time (ms) by top-level package for one candidate (``-X importtime``)."""
    logical_ids = {directory: logical_id for logical_id, directory in FUNCTIONS.items()}
    env = child_env(fake_function_env(logical_ids.get(directory)))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    answer = subprocess.run(
        [python, "-X", "importtime", "-m", "bench.cold_child", directory],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    totals: dict[str, float] = {}
    for line in answer.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = (part.strip() for part in line.replace("import time:", "").split("|"))
        package = name.split(".")[0]
        totals[package] = totals.get(package, 0.0) + int(self_us) / 1000
    return totals


def import_difference(directory: str, *, runs: int = 5) -> list[tuple[str, float]]:
    """Packages a function imports beyond the floor, by median self import time (ms)."""
    function = [import_profile(directory) for _ in range(runs)]
    floor = [import_profile(FLOOR) for _ in range(runs)]
    packages = {name for profile in function for name in profile}
    differences = []
    for name in packages:
        extra = median([p.get(name, 0.0) for p in function]) - median([p.get(name, 0.0) for p in floor])
        if extra > 0.5:
            differences.append((name, extra))
    return sorted(differences, key=lambda item: -item[1])
