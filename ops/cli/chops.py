"""`chops`: the Chroma Maintenance CLI command lines (`chops db info PERSIST_DIR -p`, ...).

Generated from the command registry (ops.steps.registry): every command's arguments are the
fields of its option models (ops.cli.options). Only the command the arguments name is filled in
and imported, so start-up costs what that command uses.
"""

from __future__ import annotations

import argparse
import difflib
import gc
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from ops import __version__
from ops.cli import options
from ops.cli.options import Option
from ops.steps.registry import COMMANDS, GROUPS, Command

YOUNG_OBJECTS_PER_GC_PASS = 10_000
"""Allocations between two passes of the cyclic garbage collector (Python's default: 700)."""
INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 1 like every other error,
    pointing to the help of the command it is about, with a guess for a mistyped command."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"chops: error: {message}; {self.did_you_mean(message)}see: {self.prog} --help\n")

    def did_you_mean(self, message: str) -> str:
        """`did you mean 'info'? ` for a mistyped command or option, else nothing."""
        found = INVALID_CHOICE.search(message)
        if found:
            typed, choices = found.group(1), re.findall(r"'([^']*)'", found.group(2))
        elif message.startswith("unrecognized arguments: "):
            typed, choices = message.split()[2], list(self._option_string_actions)
        else:
            return ""
        close = difflib.get_close_matches(typed, choices, n=1)
        return f"did you mean {close[0]!r}? " if close else ""


def parser_for(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command the arguments chose: `chops db info` for db info's options."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return parser_for(action.choices[chosen], args)
    return parser


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser. Given the command line, only the command it names gets its arguments (and only
    its modules are imported); without one (tests walking every command), every command does."""
    parser = Parser(
        prog="chops",
        description="Inspect and safely repair Chroma persist directories.",
        epilog="Exit codes: 0 success (with --plan: nothing to do), 1 error (one line on stderr), "
        "2 changes planned (--plan), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"chroma-ops {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a traceback for errors")
    top = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    chosen = _named(argv or ())
    groups: dict[str, argparse._SubParsersAction[Parser]] = {}
    for command in COMMANDS:
        sub: argparse.ArgumentParser
        if len(command.path) == 1:
            sub = top.add_parser(command.path[0], help=command.help)
        else:
            group, name = command.path
            if group not in groups:
                groups[group] = top.add_parser(group, help=GROUPS[group]).add_subparsers(
                    dest="command", metavar="SUBCOMMAND", required=True
                )
            sub = groups[group].add_parser(name, help=command.help)
        sub.set_defaults(run=command)
        if argv is None or chosen is command:
            _add_options(sub, options.options(_models(command)))
    return parser


def _named(argv: Sequence[str]) -> Command | None:
    words = [a for a in argv if not a.startswith("-")]
    for command in COMMANDS:
        if tuple(words[: len(command.path)]) == command.path:
            return command
    return None


def _models(command: Command) -> list[type]:
    from ops.cli.commands import models

    return list(models(command))


def _add_options(p: argparse.ArgumentParser, opts: list[Option]) -> None:
    for opt in opts:
        if opt.positional:
            p.add_argument(opt.field, metavar=opt.metavar, help=opt.help)
        elif opt.kind == "switch":
            p.add_argument(*opt.spellings, dest=opt.field, action="store_true", default=None, help=opt.help)
        elif opt.kind == "negatable":
            p.add_argument(*opt.spellings, dest=opt.field, action="store_true", default=None, help=opt.help)
            p.add_argument(f"--no-{opt.long[2:]}", dest=opt.field, action="store_false", help=argparse.SUPPRESS)
        elif opt.kind == "list":
            p.add_argument(
                *opt.spellings, dest=opt.field, action="extend", nargs="+", metavar=opt.metavar, help=opt.help
            )
        else:
            p.add_argument(
                *opt.spellings,
                dest=opt.field,
                metavar=opt.metavar,
                choices=opt.choices,
                required=opt.required,
                help=opt.help,
            )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Damaged vectors (inf, NaN) make numpy warn on stderr from deep inside a check that then reports
    # them in its own words: a user reads one line, not numpy's.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="numpy")
    # A command on thousands of collections builds hundreds of thousands of small objects that live
    # until it ends; the cyclic collector's default pass every 700 allocations keeps re-scanning them
    # (~5% of `maintain --plan` on 5,000 collections; benchmarks/README.md). Memory is unchanged.
    gc.set_threshold(YOUNG_OBJECTS_PER_GC_PASS, *gc.get_threshold()[1:])
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser_for(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    command: Command = args.run

    def run() -> int:
        from ops.cli import commands

        return commands.run(command, typed_values(command, args))

    from ops.cli.commands import guarded

    return guarded(run, debug=args.debug)


def typed_values(command: Command, args: argparse.Namespace) -> dict[str, Any]:
    """What the user gave, by field name, with the environment's defaults for the rest."""
    return options.given(vars(args), options.options(_models(command)))


if __name__ == "__main__":
    sys.exit(main())
