"""The machine and the package versions every table was measured with."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "boto3",
    "botocore",
    "aws-lambda-powertools",
    "requests",
    "standardwebhooks",
    "moto",
    "ultracart-rest-sdk",
    "awscrt",
)


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": sys.version.split()[0],
        **{f"pkg:{name}": version for name, version in versions.items()},
    }
