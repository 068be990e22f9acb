"""`chops`: the Chroma Maintenance CLI command lines (`chops db info PERSIST_DIR -p`, ...)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ops import __version__
from ops.cli import commands
from ops.cli.commands import Output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chops",
        description="Inspect and safely repair Chroma persist directories.",
        epilog="Exit codes: 0 success, 1 error (one line on stderr), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"chroma-ops {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a traceback for errors")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    _add_db(groups)
    _add_hnsw(groups)
    _add_wal(groups)
    return parser


def _persist_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("persist_dir", metavar="PERSIST_DIR", help="the Chroma persist directory")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


def _privacy(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--privacy-mode", action="store_true", help="hide paths and collection names (for sharing)")


def _add_db(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = groups.add_parser("db", help="whole-database commands").add_subparsers(
        dest="command", metavar="SUBCOMMAND", required=True
    )
    info = db.add_parser("info", help="collections, segments, WAL, HNSW fragmentation, orphans, advice")
    _persist_dir(info)
    info.add_argument(
        "-s",
        "--skip-collection-names",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="collections to leave out (repeat, or separate with commas)",
    )
    _privacy(info)
    _json(info)
    info.set_defaults(
        run=lambda a: commands.db_info(a.persist_dir, a.skip_collection_names, a.privacy_mode, Output(a.json))
    )


def _add_hnsw(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hnsw = groups.add_parser("hnsw", help="HNSW index commands").add_subparsers(
        dest="command", metavar="SUBCOMMAND", required=True
    )
    info = hnsw.add_parser("info", help="one collection's HNSW segment in detail")
    _persist_dir(info)
    info.add_argument("-c", "--collection", required=True, help="collection name")
    info.add_argument("-d", "--database", default="default_database", help="database (default: %(default)s)")
    info.add_argument(
        "-v", "--verbose", action="store_true", help="also load the index with chroma-hnswlib to cross-check"
    )
    _privacy(info)
    _json(info)
    info.set_defaults(
        run=lambda a: commands.hnsw_info(
            a.persist_dir, a.collection, a.database, a.verbose, a.privacy_mode, Output(a.json)
        )
    )


def _add_wal(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    wal = groups.add_parser("wal", help="write-ahead log commands").add_subparsers(
        dest="command", metavar="SUBCOMMAND", required=True
    )
    info = wal.add_parser("info", help="WAL entries, gap and operations per collection")
    _persist_dir(info)
    _privacy(info)
    _json(info)
    info.set_defaults(run=lambda a: commands.wal_info(a.persist_dir, a.privacy_mode, Output(a.json)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return commands.guarded(lambda: int(args.run(args)), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
