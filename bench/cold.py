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

TARGET_RATIO = 1.20
FLOOR = "floor"


@dataclass(frozen=True)
class Candidate:
    key: str  # unique in the table
    child: str  # what bench.cold_child builds
    label: str
    kind: str  # "floor" | "peer" | "function" | "no_pyc" | "diagnostic"
    no_pyc: bool = False
    # Whose environment the child gets (the template's, per function); others get the token API's.
    logical_id: str = "TokenApiFunction"


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
        Candidate(directory, directory, logical_id, "function", logical_id=logical_id)
        for logical_id, directory in FUNCTIONS.items()
    ]
    # The browser's two first requests: a callback (above, as section 2 counts it) and /install.
    found.append(
        Candidate(
            "oauth_browser@install",
            "oauth_browser@install",
            "OAuthBrowserFunction, /install",
            "function",
            logical_id="OAuthBrowserFunction",
        )
    )
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
_REGION = "us-east-1"
_STACK = "bench"


def _fake_resource(logical_id: str, kind: str) -> tuple[str, dict[str, str]]:
    """(!Ref value, {"LogicalId.Attribute": value}) for one resource: names and ARNs only."""
    name = f"{_STACK}-{logical_id}"
    arn = f"arn:aws:{{service}}:{_REGION}:{_ACCOUNT}:{{rest}}"
    if kind == "AWS::SQS::Queue":
        url = f"https://sqs.{_REGION}.amazonaws.com/{_ACCOUNT}/{name}"
        return url, {"Arn": arn.format(service="sqs", rest=name), "QueueName": name, "QueueUrl": url}
    if kind == "AWS::KMS::Key":
        key = "00000000-0000-4000-8000-000000000000"
        return key, {"Arn": arn.format(service="kms", rest=f"key/{key}"), "KeyId": key}
    if kind == "AWS::SecretsManager::Secret":
        secret = arn.format(service="secretsmanager", rest=f"secret:{name}-AbCdEf")
        return secret, {"Id": secret}
    if kind == "AWS::DynamoDB::Table":
        return name, {"Arn": arn.format(service="dynamodb", rest=f"table/{name}")}
    if kind == "AWS::Events::EventBus":
        return name, {"Arn": arn.format(service="events", rest=f"event-bus/{name}"), "Name": name}
    return name, {"Arn": arn.format(service="unknown", rest=name)}


def fake_function_env(logical_id: str = "TokenApiFunction") -> dict[str, str]:
    """A function's environment as the template declares it (Globals + its own), resolved
    against fake resources (no create_resources, no network), plus what Lambda sets."""
    from devstack.resources import LocalResources, load_template, parameter_values

    template = load_template()
    parameters = parameter_values(template, stage=_STACK)
    refs: dict[str, str] = {}
    attributes: dict[str, str] = {}
    for resource_id, resource in template["Resources"].items():
        ref, attrs = _fake_resource(resource_id, str(resource.get("Type")))
        refs[resource_id] = ref
        attributes.update({f"{resource_id}.{attribute}": value for attribute, value in attrs.items()})
    resources = LocalResources(
        table_name=refs["InstallationsTable"],
        key_id=refs["TokenKey"],
        key_arn=attributes["TokenKey.Arn"],
        refresh_queue_url=refs["RefreshQueue"],
        refresh_dlq_url=refs["RefreshDeadLetterQueue"],
        revoke_queue_url=refs["RevokeQueue"],
        revoke_dlq_url=refs["RevokeDeadLetterQueue"],
        events_observer_queue_url="",
        webhook_secret_arn=refs["UninstallWebhookSecret"],
        webhook_secret_value="",
        event_bus_name=refs["EventBus"],
        region=_REGION,
        endpoint_url=None,
        stack_name=_STACK,
        account_id=_ACCOUNT,
        parameters=parameters,
        template=template,
        refs=refs,
        attributes=attributes,
    )
    env = resources.function_environment(logical_id)
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
    cpu: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.key,
            "label": self.candidate.label,
            "kind": self.candidate.kind,
            "ready_median": median(self.ready),
            # The least disturbed run: other work on the machine only ever slows a run down.
            "ready_min": min(self.ready, default=0.0),
            "spawn_to_ready_median": median(self.spawn_to_ready),
            "wall_median": median(self.wall),
            "import_median": median(self.imports),
            "clients_median": median(self.clients),
            "cpu_median": median(self.cpu),
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


def measure(
    rounds: int,
    scratch: Path,
    *,
    python: str = sys.executable,
    listed: list[Candidate] | None = None,
) -> list[ColdResult]:
    """``rounds`` measured rounds after one discarded warm-up round; candidates interleaved."""
    listed = candidates() if listed is None else listed
    # Bytecode may be written: the warm-up round caches .pyc for ucoauth and the handlers, as a
    # pip-installed package or a compiled layer has them. The no-pyc candidates get none.
    envs: dict[str, dict[str, str]] = {}
    layer_and_functions: tuple[Path, Path] | None = None
    for candidate in listed:
        env = child_env(fake_function_env(candidate.logical_id))
        if candidate.no_pyc:
            if layer_and_functions is None:
                layer_and_functions = build_without_bytecode(scratch / "no-pyc")
            layer, functions = layer_and_functions
            env["PYTHONPATH"] = ":".join([str(layer), *PYTHONPATH[1:]])
            env["BENCH_FUNCTIONS_ROOT"] = str(functions)
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        envs[candidate.key] = env
    results = {candidate.key: ColdResult(candidate) for candidate in listed}
    for round_number in range(rounds + 1):
        # Rotate the order so no candidate always runs right after the same neighbour.
        shift = round_number % len(listed)
        for candidate in listed[shift:] + listed[:shift]:
            wall, to_ready, inside = _one(python, candidate, envs[candidate.key])
            if round_number == 0:
                continue  # warm-up: page cache, .pyc files
            result = results[candidate.key]
            result.wall.append(wall)
            result.spawn_to_ready.append(to_ready)
            result.ready.append(inside["ready"])
            result.imports.append(inside["import"])
            result.clients.append(inside["clients"])
            result.cpu.append(inside["cpu"])
        if round_number and round_number % 3 == 0:
            progress(f"cold start: round {round_number}/{rounds}")
    return [results[candidate.key] for candidate in listed]


def _importtime(directory: str, *, python: str = sys.executable) -> str:
    """The ``-X importtime`` report of one cold start of ``directory`` (a candidate)."""
    logical_id = next((k for k, v in FUNCTIONS.items() if v == directory), "TokenApiFunction")
    env = child_env(fake_function_env(logical_id))
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
    return answer.stderr


def parse_importtime(report: str) -> list[tuple[str, float, float, int]]:
    """(module, self ms, cumulative ms, depth) per line of a ``-X importtime`` report, in its order
    (a module's line comes after the lines of everything it imported, one level deeper)."""
    rows = []
    for line in report.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append((name.strip(), int(self_us) / 1000, int(cumulative_us) / 1000, depth))
    return rows


def heaviest_imports(report: str) -> dict[str, float]:
    """Cumulative ms of what a function run imported beyond start-up: each module ``app`` imports
    directly, and each module imported later, while the clients are built (botocore, requests)."""
    rows = parse_importtime(report)
    names = [name for name, _, _, _ in rows]
    if "app" not in names:
        return {name: cumulative for name, _, cumulative, depth in rows if depth == 0}
    at = names.index("app")
    found: dict[str, float] = {}
    # app's direct imports: the depth-1 lines right before it, back to the previous depth-0 line.
    for name, _, cumulative, depth in reversed(rows[:at]):
        if depth == 0:
            break
        if depth == 1:
            found[name] = cumulative
    found.update({name: cumulative for name, _, cumulative, depth in rows[at + 1 :] if depth == 0})
    found["app (all of it)"] = rows[at][2]
    return found


def import_profile(directory: str, *, python: str = sys.executable) -> dict[str, float]:
    """Self import time (ms) by top-level package for one candidate (``-X importtime``)."""
    totals: dict[str, float] = {}
    for name, self_ms, _, _ in parse_importtime(_importtime(directory, python=python)):
        package = name.split(".")[0]
        totals[package] = totals.get(package, 0.0) + self_ms
    return totals


@dataclass
class ImportRow:
    """One function's imports: ``app``'s cumulative time and its heaviest imports (medians, ms)."""

    label: str
    app_ms: float
    heaviest: list[tuple[str, float]]


def import_table(runs: int = 3, top: int = 6) -> list[ImportRow]:
    """Per function, the modules with the largest cumulative import time (medians of ``runs``)."""
    rows = []
    for logical_id, directory in FUNCTIONS.items():
        found = [heaviest_imports(_importtime(directory)) for _ in range(runs)]
        names = {name for profile in found for name in profile}
        medians = {name: median([profile.get(name, 0.0) for profile in found]) for name in names}
        app_ms = medians.pop("app (all of it)", 0.0)
        ranked = sorted(medians.items(), key=lambda item: -item[1])[:top]
        rows.append(ImportRow(logical_id, app_ms, ranked))
    return rows


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


# -- the cold-start part alone: ``python -m bench.cold`` -------------------------------------------


def _select(names: list[str]) -> list[Candidate]:
    """The floor (always, first) and the candidates asked for: keys, or the kinds
    ``functions``, ``peers``, ``no_pyc`` and ``diagnostics``."""
    kinds = {"functions": "function", "peers": "peer", "no_pyc": "no_pyc", "diagnostics": "diagnostic"}
    listed = candidates()
    keys = {candidate.key for candidate in listed}
    unknown = [name for name in names if name not in keys and name not in kinds]
    if unknown:
        raise SystemExit(f"unknown candidates {unknown}: choose from {sorted(keys | set(kinds))}")
    wanted = {kinds.get(name, name) for name in names}
    return [c for c in listed if c.key == FLOOR or c.key in wanted or c.kind in wanted]


def main(argv: list[str] | None = None) -> int:
    """Only the cold-start measurement: a table of medians and ratios on stdout."""
    import argparse
    import tempfile

    from bench.common import use_project_paths

    parser = argparse.ArgumentParser(
        prog="python -m bench.cold",
        description="Cold-ready time only (the floor plus the chosen candidates), interleaved.",
    )
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (median of these)")
    parser.add_argument(
        "candidates",
        nargs="*",
        default=["functions"],
        help="candidate keys or kinds (functions, peers, no_pyc, diagnostics); default: functions",
    )
    args = parser.parse_args(argv)
    use_project_paths()
    listed = _select(args.candidates)
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as scratch:
        results = measure(args.rounds, Path(scratch), listed=listed)
    floor = results[0].as_json()
    print(
        f"{'candidate':<26} {'ready ms':>9} {'x floor':>8} {'best x':>7} {'imports':>8} {'clients':>8} "
        f"{'cpu ms':>7} {'x floor':>8}"
    )
    for result in results:
        data = result.as_json()
        print(
            f"{result.candidate.key:<26} {data['ready_median'] * 1000:>9.0f} "
            f"{data['ready_median'] / floor['ready_median']:>8.2f} "
            f"{data['ready_min'] / floor['ready_min']:>7.2f} "
            f"{data['import_median'] * 1000:>8.0f} {data['clients_median'] * 1000:>8.0f} "
            f"{data['cpu_median'] * 1000:>7.0f} {data['cpu_median'] / floor['cpu_median']:>8.2f}"
        )
    print(f"({args.rounds} rounds, medians; best: the fastest run; target <= {TARGET_RATIO}x the floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
