"""The Powertools parts the functions use, loaded without the package roots that load everything.

Two Powertools packages run an ``__init__`` that imports every one of their modules:
``aws_lambda_powertools.event_handler`` imports all its resolvers (AppSync's pulls in asyncio),
and ``aws_lambda_powertools.utilities.data_classes`` imports every event class Lambda has.
Python runs a package's ``__init__`` before any of its submodules, so importing only
``event_handler.api_gateway`` or ``data_classes.sqs_event`` still paid for all of it: about 6% of
a cold start (docs/BENCHMARKS.md has the instruction counts).

This module registers those two packages as *lazy packages* before anything imports them: the
package module exists (with its ``__path__``, so submodules import normally) but its
``__init__`` has not run. A name the package's ``__init__`` would export is resolved on first use,
from the submodule the ``__init__`` imports it from (read from its source, not run); a name it
defines otherwise makes the real ``__init__`` run then. A function imports its Powertools
resolver from :mod:`ucoauth.edges.resolver` and its batch processor from :mod:`ucoauth.edges.batch`, which
register the lazy packages first: that is what guarantees the order.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

# The packages loaded lazily: their ``__init__`` only re-exports names from their submodules.
EVENT_HANDLER = "aws_lambda_powertools.event_handler"
DATA_CLASSES = "aws_lambda_powertools.utilities.data_classes"


def package_exports(origin: str, package: str) -> dict[str, str]:
    """What a package's ``__init__`` (its source at ``origin``) re-exports: name -> submodule."""
    exports: dict[str, str] = {}
    for node in ast.parse(Path(origin).read_bytes(), origin).body:
        if not isinstance(node, ast.ImportFrom) or node.module is None:
            continue
        module = importlib.util.resolve_name("." * node.level + node.module, package)
        if module.startswith(package + "."):
            for alias in node.names:
                exports[alias.asname or alias.name] = module
    return exports


def register_lazy_package(name: str) -> None:
    """Register package ``name`` (importable, not imported yet) without running its ``__init__``."""
    if name in sys.modules:
        return  # already imported for real (a test, a tool): nothing to save
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not a package")
    loader, origin = spec.loader, spec.origin
    package = importlib.util.module_from_spec(spec)
    exports: dict[str, str] = {}

    def __getattr__(attribute: str) -> Any:  # the module-level hook (PEP 562)
        if not exports and origin is not None and origin.endswith(".py"):
            exports.update(package_exports(origin, name))
        source = exports.get(attribute)
        if source is not None:
            value = getattr(importlib.import_module(source), attribute)
            setattr(package, attribute, value)
            return value
        probe = attribute.startswith("__") and attribute != "__all__"
        if probe or importlib.util.find_spec(f"{name}.{attribute}") is not None:
            # A dunder probe, or a submodule not imported yet: the import system imports it.
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
        # Not a re-export, or __all__ (or no source to read): run the package's own __init__ now.
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, attribute)

    package.__dict__["__getattr__"] = __getattr__
    sys.modules[name] = package
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, package)


def lazy_packages(*names: str) -> None:
    """Register each package of ``names`` that is not imported yet (idempotent)."""
    for name in names:
        register_lazy_package(name)


def is_lazy(name: str) -> bool:
    """Whether package ``name`` is registered and its own ``__init__`` has not run (yet)."""
    module = sys.modules.get(name)
    return module is not None and "__getattr__" in module.__dict__
