"""The command line's grammar: options accepted before and after every command, one subparser per
command, each bound to its ``cmd_*`` function (``args.run``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from ucoauth_client.cli.api import EXIT_USAGE
from ucoauth_client.cli.commands import (
    cmd_install,
    cmd_link,
    cmd_list,
    cmd_redrive,
    cmd_refresh,
    cmd_show,
    cmd_stats,
    cmd_uninstall,
    cmd_watch,
)

STATUSES = ("active", "reauthorization_required", "uninstalling", "uninstalled")
Commands = Any  # argparse's _SubParsersAction, private in typeshed's terms


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"ucoauth: error: {message}\n")


def _common_options(default: Any) -> _Parser:
    # Accepted before and after the command; a subcommand's copy must not reset what was given
    # before it, hence SUPPRESS there.
    common = _Parser(add_help=False)
    common.add_argument("--stack", default=default, help="CloudFormation stack name: its AdminApiUrl output")
    common.add_argument("--url", default=default, help="the API's base URL (ApiUrl, or ApiUrl/admin)")
    common.add_argument(
        "--region", default=default, help="AWS region (default: the URL's, else your AWS configuration)"
    )
    common.add_argument(
        "--json", action="store_true", default=False if default is None else default, help="JSON output"
    )
    return common


def _installations(commands: Commands, common: _Parser) -> None:
    installations = commands.add_parser("installations", help="list or show installations", parents=[common])
    which = installations.add_subparsers(dest="action", required=True, parser_class=_Parser)
    listing = which.add_parser("list", help="installations (all pages)", parents=[common])
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--account", help="only those linked to this account of your app")
    listing.add_argument("--max", type=int, help="stop after this many")
    listing.add_argument("--page-size", type=int, default=50, choices=range(1, 101), metavar="1-100")
    listing.set_defaults(run=cmd_list)
    show = which.add_parser("show", help="one installation", parents=[common])
    show.add_argument("merchant_id")
    show.set_defaults(run=cmd_show)


def _actions(commands: Commands, common: _Parser) -> None:
    refresh = commands.add_parser("refresh", help="refresh a merchant's tokens now", parents=[common])
    refresh.add_argument("merchant_id")
    refresh.set_defaults(run=cmd_refresh)

    uninstall = commands.add_parser(
        "uninstall", help="revoke and delete a merchant's tokens", parents=[common]
    )
    uninstall.add_argument("merchant_id")
    uninstall.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    uninstall.add_argument("--wait", action="store_true", help="wait until the revoke is done")
    uninstall.set_defaults(run=cmd_uninstall)

    dead = commands.add_parser("dead-letters", help="dead-letter queues", parents=[common])
    dead_actions = dead.add_subparsers(dest="action", required=True, parser_class=_Parser)
    redrive = dead_actions.add_parser(
        "redrive", help="move dead letters back to their queue", parents=[common]
    )
    redrive.add_argument("queue", choices=("refresh", "revoke"))
    redrive.set_defaults(run=cmd_redrive)

    installing = commands.add_parser(
        "install",
        help="install without a browser redirect: --device shows a code and waits",
        parents=[common],
    )
    installing.add_argument("--device", action="store_true", help="UltraCart's device flow (RFC 8628)")
    installing.add_argument(
        "--scope", help="the UltraCart scope to ask for (default: the stack's DeviceScope)"
    )
    installing.add_argument("--timeout", type=float, help="give up after this many seconds")
    installing.set_defaults(run=cmd_install)

    link = commands.add_parser(
        "link",
        help="an install link for one of your app's accounts (POST /install-sessions)",
        parents=[common],
    )
    link.add_argument("account", help="your app's account id (1-128 of A-Z a-z 0-9 . _ : @ -)")
    link.add_argument("--return-url", help="offered on the success page (an InstallReturnOrigins origin)")
    link.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata (repeatable)")
    link.set_defaults(run=cmd_link)


def _views(commands: Commands, common: _Parser) -> None:
    stats = commands.add_parser("stats", help="installations, budget, queues", parents=[common])
    stats.set_defaults(run=cmd_stats)

    watch = commands.add_parser("watch", help="a live view of the stats (Ctrl-C stops)", parents=[common])
    watch.add_argument("--interval", type=float, default=5.0)
    watch.add_argument("--count", type=int, help="stop after this many views")
    watch.set_defaults(run=cmd_watch)


def build_parser() -> argparse.ArgumentParser:
    """The command line's grammar."""
    top, common = _common_options(None), _common_options(argparse.SUPPRESS)
    parser = _Parser(
        prog="ucoauth",
        description="Operate UltraCart OAuth installations through the stack's admin API.",
        parents=[top],
        epilog="Exit codes: 0 done, 1 failed, 2 usage. Without --stack or --url: the `make dev` stack.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _installations(commands, common)
    _actions(commands, common)
    _views(commands, common)
    return parser
