"""template.yaml's resources in moto's in-process mock, created once per process and emptied per test.

Creating the stack (key, table, queues, secrets, rules, alarms) costs more than most unit tests
themselves, and no unit test changes a resource: they change data. So the resources are created
the first time, kept in moto's backends between tests, and each test starts with them empty:
no item in any table, no message in any queue (in flight and delayed ones included). Anything
that resets moto's backends (``mock_aws`` with its default reset, moto's server's
``/moto-api/reset``) only makes the next test create them again.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.hooks
import botocore.session
import jsonpath_ng.ext
import moto
from moto.backends import get_backend
from moto.core.custom_responses_mock import reset_responses_mock
from moto.core.models import MockAWS, responses_mock
from moto.dynamodb.parsing import ast_nodes, validators
from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

from devstack.resources import LocalResources, create_resources

_created: LocalResources | None = None


@contextmanager
def shared_botocore_data() -> Iterator[None]:
    """Every botocore session of the block shares one loader of botocore's data files.

    Each new session (and the package makes one after every ``ucoauth.reset()``) would parse
    the service models and endpoint files again, which costs more than most tests. The files
    never change, and one session's clients share them the same way.
    """
    original = botocore.session.create_loader
    loaders: dict[str | None, Any] = {}

    def create_loader(search_path_string: str | None = None) -> Any:
        if search_path_string not in loaders:
            loaders[search_path_string] = original(search_path_string)
        return loaders[search_path_string]

    botocore.session.create_loader = create_loader
    try:
        yield
    finally:
        botocore.session.create_loader = original


@contextmanager
def shared_botocore_handler_checks() -> Iterator[None]:
    """A new botocore session registers some 130 handlers, and botocore works out two things
    for each, every time: the handler's signature (does it take ``**kwargs``?) and the event's
    name after botocore's renames (``EVENT_ALIASES``). Both depend only on the function and
    the name, so in the block they are worked out once per process instead of once per
    session (and the package makes a session after every ``ucoauth.reset()``).
    """
    hooks: Any = botocore.hooks  # private names, which botocore's type stubs leave out
    original_accepts = hooks.accepts_kwargs
    original_alias = hooks.EventAliaser._alias_event_name
    signatures: weakref.WeakKeyDictionary[Callable[..., Any], Any] = weakref.WeakKeyDictionary()
    aliases: dict[str, str] = {}

    def accepts_kwargs(func: Any) -> Any:
        function = getattr(func, "__func__", func)  # a bound method has its function's **kwargs
        if not isinstance(function, types.FunctionType):
            return original_accepts(func)
        if function not in signatures:
            signatures[function] = original_accepts(func)
        return signatures[function]

    def alias_event_name(self: Any, event_name: str) -> str:
        if self._event_aliases is not hooks.EVENT_ALIASES:
            return original_alias(self, event_name)  # type: ignore[no-any-return]
        if event_name not in aliases:
            aliases[event_name] = original_alias(self, event_name)
        return aliases[event_name]

    hooks.accepts_kwargs = accepts_kwargs
    hooks.EventAliaser._alias_event_name = alias_event_name
    try:
        yield
    finally:
        hooks.accepts_kwargs = original_accepts
        hooks.EventAliaser._alias_event_name = original_alias


@contextmanager
def update_expressions_checked_once() -> Iterator[None]:
    """moto's DynamoDB parses an UpdateExpression once per UpdateItem and checks its shape once per
    UpdateItem, as DynamoDB does; here both happen once per distinct expression.

    An installation write sets and removes some twenty attributes, and moto's two checks of the
    expression's shape alone (at most one clause of each kind, no path set twice) visit every
    sub-expression of every sub-expression: several milliseconds per write, most of the unit
    tests' time in moto. Neither looks at the item or the values, only at the expression (and the
    attribute names), so the answer of the first check holds for every later write of the same
    expression. Everything that depends on the item or the values (types, missing paths, key
    attributes, the conditions) is still evaluated on every write, and an expression that fails
    to parse or a check is never remembered: it fails every time.
    """
    original_make = UpdateExpressionParser.__dict__["make"]
    original_init = validators.UpdateExpressionValidator.__init__
    traverser: Any = ast_nodes.DepthFirstTraverser  # type: ignore[attr-defined]
    original_node_types = traverser.nodes_to_be_processed
    parsed: dict[str, Any] = {}
    # id of a parsed expression -> (that expression, the attribute names it passed the checks with)
    passed: dict[int, tuple[Any, set[tuple[tuple[str, str], ...]]]] = {}
    shape_checks = (validators.ActionCountValidator, validators.OverlappingPathsValidator)

    def make(cls: Any, expression_str: str) -> Any:
        # moto's validators work on a deep copy; nothing changes the parsed tree itself.
        if expression_str not in parsed:
            parsed[expression_str] = original_make.__func__(cls, expression_str)
            passed[id(parsed[expression_str])] = (parsed[expression_str], set())
        return parsed[expression_str]

    class _ShapeChecksOnce:
        """The two shape checks as one processor, skipped once they passed for (expression, names)."""

        def __init__(self, checks: list[Any], remembered: set[tuple[tuple[str, str], ...]], names: Any):
            self.checks = checks
            self.remembered = remembered
            self.names = tuple(sorted((names or {}).items()))

        def traverse(self, node: Any) -> Any:
            if self.names in self.remembered:
                return node
            for check in self.checks:
                node = check.traverse(node)
            self.remembered.add(self.names)
            return node

    def init(self: Any, expression: Any, expression_attribute_names: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, expression, expression_attribute_names, *args, **kwargs)
        entry = passed.get(id(expression))
        if entry is None or entry[0] is not expression:
            return  # not an expression parsed here: every check runs
        checks = self.processors[: len(shape_checks)]
        if tuple(type(p) for p in checks) != shape_checks:
            return  # another moto: its processors as they are
        self.processors = [
            _ShapeChecksOnce(checks, entry[1], expression_attribute_names),
            *self.processors[len(checks) :],
        ]

    def node_types(self: Any) -> Any:
        # moto's "cached accessor" rebuilds the tuple of a processor's node types (the keys of a
        # literal dict) at every node it visits: a third of the remaining validation time.
        found = self.__dict__.get("_node_types")
        if found is None:
            found = self.__dict__["_node_types"] = original_node_types(self)
        return found

    UpdateExpressionParser.make = classmethod(make)
    validators.UpdateExpressionValidator.__init__ = init  # type: ignore[method-assign]
    traverser.nodes_to_be_processed = node_types
    try:
        yield
    finally:
        UpdateExpressionParser.make = original_make
        validators.UpdateExpressionValidator.__init__ = original_init  # type: ignore[method-assign]
        traverser.nodes_to_be_processed = original_node_types


@contextmanager
def event_paths_parsed_once() -> Iterator[None]:
    """moto's EventBridge parses the same eight JSONPath expressions (its default input paths) for
    every target of every event it delivers, each with a new lexer and parser (~1 ms apiece, a
    tenth of a PutEvents). A parsed path is only read (``find``), so one per expression serves all.
    """
    module: Any = jsonpath_ng.ext
    original = module.parse
    parsed: dict[tuple[str, Any], Any] = {}

    def parse(path: str, debug: Any = None) -> Any:
        if (path, debug) not in parsed:
            parsed[path, debug] = original(path, debug)
        return parsed[path, debug]

    module.parse = parse  # moto imports it from the module at each call
    try:
        yield
    finally:
        module.parse = original


@contextmanager
def in_process_stack(region: str) -> Iterator[LocalResources]:
    """``mock_aws`` active for the block, with the template's resources, empty."""
    global _created
    mock = moto.mock_aws()
    # reset=False keeps the backends (and so the resources) of the previous test.
    mock.start(reset=False)
    try:
        if _created is None or _created.region != region or not _empty(_created):
            _created = create_resources(boto3.Session(region_name=region))
        yield _created
    finally:
        mock.stop(remove_data=False)
        if MockAWS._nested_count == 0:
            # Each start adds its ~1300 routes for the requests library again, and only a reset
            # of the backends would clear them: 130 tests later a worker held 170,000 (100 MB,
            # and each start slower than the last). The mock is off, so it needs none of them.
            reset_responses_mock(responses_mock)


def _empty(resources: LocalResources) -> bool:
    """Delete every item of the stack's tables and every message of its queues, in moto's own
    state (what DeleteItem and PurgeQueue do, without a hundred calls per test); False when the
    resources are gone (moto was reset since they were created)."""
    prefix = f"{resources.stack_name}-"
    dynamodb = get_backend("dynamodb")[resources.account_id][resources.region]
    sqs = get_backend("sqs")[resources.account_id][resources.region]
    tables = {name: table for name, table in dynamodb.tables.items() if name.startswith(prefix)}
    queues = {name: queue for name, queue in sqs.queues.items() if name.startswith(prefix)}
    if resources.table_name not in tables or "RefreshQueue" not in resources.refs:
        return False
    if resources.refresh_queue_url.rsplit("/", 1)[-1] not in queues:
        return False
    for table in tables.values():
        table.items.clear()
    for queue in queues.values():
        queue._messages = []  # in flight and delayed messages included, as PurgeQueue
        queue._pending_messages = set()
    return True
