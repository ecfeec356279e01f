"""``ucoauth``: the operators' command line over the stack's admin API (``/admin/*``, SigV4-signed).

Installed with the client (``pip install ./client``). It finds the API from ``--url``, from
``--stack NAME`` (the stack's ``AdminApiUrl`` output), or, with neither, from the running local
stack's ``.devstack/state.json`` (``make dev``). Exit codes: 0 done, 1 failed, 2 usage.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ucoauth_client.cli.api import EXIT_FAILED, EXIT_USAGE, AdminClient, CliError, find_endpoint
from ucoauth_client.cli.commands import Io
from ucoauth_client.cli.grammar import build_parser
from ucoauth_client.errors import TokenClientError

__all__ = ["main"]


def _ask(prompt: str) -> bool:
    if not sys.stdin.isatty():
        raise CliError("refusing to uninstall without a terminal to confirm: add --yes", EXIT_USAGE)
    return input(prompt).strip().lower() in ("y", "yes")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ucoauth`` console script."""
    args = build_parser().parse_args(argv)
    io = Io(out=sys.stdout, err=sys.stderr, json=args.json, confirm=_ask)
    try:
        client = AdminClient(find_endpoint(args.stack, args.url, args.region))
        code: int = args.run(client, io, args)
    except CliError as exc:
        print(f"ucoauth: {exc}", file=sys.stderr)
        return exc.code
    except TokenClientError as exc:  # no stack, region or credentials to be found
        print(f"ucoauth: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
    return code
