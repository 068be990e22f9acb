"""`chops`: the Chroma Maintenance CLI command lines (`chops db info PERSIST_DIR -p`, ...)."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from ops import __version__
from ops.cli import commands
from ops.cli.commands import MutationOptions, Output
from ops.engine.live_policy import LiveOptions
from ops.engine.lock import DEFAULT_LOCK_TIMEOUT_S

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


if TYPE_CHECKING:
    Groups: TypeAlias = argparse._SubParsersAction[Parser]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="chops",
        description="Inspect and safely repair Chroma persist directories.",
        epilog="Exit codes: 0 success (with --plan: nothing to do), 1 error (one line on stderr), "
        "2 changes planned (--plan), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"chroma-ops {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a traceback for errors")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    _add_db(groups)
    _add_hnsw(groups)
    _add_wal(groups)
    _add_fts(groups)
    _add_backup(groups)
    _add_maintain(groups)
    _add_collection(groups)
    return parser


def _persist_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("persist_dir", metavar="PERSIST_DIR", help="the Chroma persist directory")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


def _skip(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument(
        "-s", "--skip-collection-names", action="extend", nargs="+", default=[], metavar="NAME", help=help_text
    )


def _privacy(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-p",
        "--privacy-mode",
        action="store_true",
        help="hide paths and tenant, database and collection names (for sharing)",
    )


def _mutation(p: argparse.ArgumentParser) -> None:
    """The options every command that changes the persist dir shares."""
    p.add_argument(
        "--plan", action="store_true", help="print the JSON plan and change nothing (exit 2 if it plans changes)"
    )
    p.add_argument("--dry-run", dest="plan", action="store_true", help="same as --plan")
    p.add_argument(
        "-y", "--yes", action="store_true", help="apply without asking (required when stdin is not a terminal)"
    )
    p.add_argument(
        "--backup", dest="backup", action="store_true", default=True, help="back up what changes first (default)"
    )
    p.add_argument("--no-backup", dest="backup", action="store_false", help="do not back up (no automatic rollback)")
    p.add_argument(
        "--backup-root",
        default=os.environ.get("CHOPS_BACKUP_ROOT"),
        help="where backups go (default: $CHOPS_BACKUP_ROOT or PERSIST_DIR.chops-backups beside the persist dir)",
    )
    p.add_argument("--keep-backups", type=int, default=5, metavar="N", help="backups to keep (default: %(default)s)")
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=float(os.environ.get("CHOPS_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT_S)),
        metavar="SECONDS",
        help="how long to retry a database another process holds (default: %(default)s)",
    )
    _live(p)
    p.add_argument(
        "--chroma-verify",
        action="store_true",
        help="after our checks, the installed chromadb (of this dir's layout only) must answer on a scratch copy",
    )
    _json(p)


def _live(p: argparse.ArgumentParser, allow_live: bool = True) -> None:
    """How a change treats a running Chroma (see README: "Beside a running Chroma"). A rollback
    never runs beside one, so it has no --allow-live."""
    if allow_live:
        p.add_argument(
            "--allow-live",
            action="store_true",
            help="run beside a running Chroma (only steps proven safe beside one: db clean, db snapshot, "
            "fts rebuild, collection snapshot, collection restore --as)",
        )
    p.add_argument(
        "--allow-unchecked",
        action="store_true",
        help="go on when some processes could not be checked for open files (run as root to check them all)",
    )
    p.add_argument(
        "--chroma-url",
        default=os.environ.get("CHOPS_CHROMA_URL"),
        metavar="URL",
        help="a Chroma server to ask before changing anything; refused while it answers "
        "(for a server /proc cannot see; default: $CHOPS_CHROMA_URL)",
    )


def live_options(a: argparse.Namespace) -> LiveOptions:
    return LiveOptions(
        allow_live=getattr(a, "allow_live", False), allow_unchecked=a.allow_unchecked, chroma_url=a.chroma_url
    )


def _runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--search-ef", type=int, help="ef used at query time")
    p.add_argument("--num-threads", type=int, help="threads Chroma uses for the index")
    p.add_argument("--resize-factor", type=float, help="growth factor when the index is full")
    p.add_argument("--batch-size", type=int, help="writes buffered before they reach the index")
    p.add_argument("--sync-threshold", type=int, help="writes between persisting the index to disk")


def _runtime_values(a: argparse.Namespace) -> dict[str, int | float | str | None]:
    return {
        "ef_search": a.search_ef,
        "num_threads": a.num_threads,
        "resize_factor": a.resize_factor,
        "batch_size": a.batch_size,
        "sync_threshold": a.sync_threshold,
    }


def mutation_options(a: argparse.Namespace) -> MutationOptions:
    return MutationOptions(
        plan_only=a.plan,
        yes=a.yes,
        backup=a.backup,
        backup_root=a.backup_root,
        keep_backups=a.keep_backups,
        lock_timeout=a.lock_timeout,
        chroma_verify=a.chroma_verify,
        allow_live=a.allow_live,
        allow_unchecked=a.allow_unchecked,
        chroma_url=a.chroma_url,
    )


def _subcommands(groups: Groups, name: str, help_text: str) -> Any:
    return groups.add_parser(name, help=help_text).add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)


def _add_db(groups: Groups) -> None:
    db = _subcommands(groups, "db", "whole-database commands")
    info = db.add_parser("info", help="collections, segments, WAL, HNSW fragmentation, orphans, advice")
    _persist_dir(info)
    _skip(info, "collections to leave out (repeat, or separate with commas)")
    _privacy(info)
    _json(info)
    info.set_defaults(
        run=lambda a: commands.db_info(a.persist_dir, a.skip_collection_names, a.privacy_mode, Output(a.json))
    )
    snap = db.add_parser("snapshot", help="a consistent copy of the whole persist dir, with a sha256 manifest")
    _persist_dir(snap)
    snap.add_argument("-o", "--out", required=True, help="new folder for the snapshot")
    _mutation(snap)
    snap.set_defaults(run=lambda a: commands.db_snapshot(a.persist_dir, a.out, mutation_options(a), Output(a.json)))
    restore = db.add_parser("restore", help="make the persist dir exactly what a db snapshot saved")
    _persist_dir(restore)
    restore.add_argument("-i", "--input", required=True, help="snapshot folder (from db snapshot)")
    _mutation(restore)
    restore.set_defaults(run=lambda a: commands.db_restore(a.persist_dir, a.input, mutation_options(a), Output(a.json)))
    clean = db.add_parser("clean", help="remove orphan HNSW folders (no collection owns them)")
    _persist_dir(clean)
    _mutation(clean)
    clean.set_defaults(run=lambda a: commands.db_clean(a.persist_dir, mutation_options(a), Output(a.json)))


def _add_hnsw(groups: Groups) -> None:
    hnsw = _subcommands(groups, "hnsw", "HNSW index commands")
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
    rebuild = hnsw.add_parser("rebuild", help="rebuild the index from its live vectors (defragment, change params)")
    _persist_dir(rebuild)
    rebuild.add_argument("-c", "--collection", required=True, help="collection name")
    rebuild.add_argument("-d", "--database", default="default_database", help="database (default: %(default)s)")
    rebuild.add_argument("--space", choices=["l2", "ip", "cosine"], help="distance function")
    rebuild.add_argument("-m", "--m", type=int, help="max neighbours per node (M)")
    rebuild.add_argument("--construction-ef", type=int, help="ef used while building")
    _runtime_options(rebuild)
    rebuild.add_argument("--threads", type=int, help="build threads (default: all cores, or --num-threads)")
    _mutation(rebuild)
    rebuild.set_defaults(
        run=lambda a: commands.hnsw_rebuild(
            a.persist_dir,
            a.collection,
            a.database,
            {"space": a.space, "M": a.m, "ef_construction": a.construction_ef, **_runtime_values(a)},
            a.threads or a.num_threads,
            mutation_options(a),
            Output(a.json),
        )
    )
    config = hnsw.add_parser("config", help="set runtime HNSW parameters (search ef, threads, batching)")
    _persist_dir(config)
    config.add_argument("-c", "--collection", required=True, help="collection name")
    config.add_argument("-d", "--database", default="default_database", help="database (default: %(default)s)")
    _runtime_options(config)
    _mutation(config)
    config.set_defaults(
        run=lambda a: commands.hnsw_config(
            a.persist_dir,
            a.collection,
            a.database,
            _runtime_values(a),
            mutation_options(a),
            Output(a.json),
        )
    )


def _add_wal(groups: Groups) -> None:
    wal = _subcommands(groups, "wal", "write-ahead log commands")
    info = wal.add_parser("info", help="WAL entries, gap and operations per collection")
    _persist_dir(info)
    _privacy(info)
    _json(info)
    info.set_defaults(run=lambda a: commands.wal_info(a.persist_dir, a.privacy_mode, Output(a.json)))
    clean = wal.add_parser("clean", help="delete WAL rows every segment has applied, then VACUUM")
    _persist_dir(clean)
    _skip(clean, "collections whose WAL is left alone")
    clean.add_argument("--temp-dir", help="folder for VACUUM's temporary copy (default: one with room)")
    _mutation(clean)
    clean.set_defaults(
        run=lambda a: commands.wal_clean(
            a.persist_dir, a.skip_collection_names, a.temp_dir, mutation_options(a), Output(a.json)
        )
    )
    commit = wal.add_parser("commit", help="apply WAL entries past each vector segment's max_seq_id to its index")
    _persist_dir(commit)
    _skip(commit, "collections left alone")
    commit.add_argument("--threads", type=int, help="index threads (default: all cores)")
    _mutation(commit)
    commit.set_defaults(
        run=lambda a: commands.wal_commit(
            a.persist_dir, a.skip_collection_names, a.threads, mutation_options(a), Output(a.json)
        )
    )
    export = wal.add_parser("export", help="stream the WAL as JSON Lines (one entry a line)")
    _persist_dir(export)
    export.add_argument("-o", "--out", help="output file (default: stdout)")
    export.set_defaults(run=lambda a: commands.wal_export(a.persist_dir, a.out))
    config = wal.add_parser("config", help="set Chroma's automatic WAL purge")
    _persist_dir(config)
    config.add_argument("--purge", required=True, choices=["auto", "off"], help="automatic purge on or off")
    _mutation(config)
    config.set_defaults(run=lambda a: commands.wal_config(a.persist_dir, a.purge, mutation_options(a), Output(a.json)))


def _add_fts(groups: Groups) -> None:
    fts = _subcommands(groups, "fts", "full-text search index commands")
    rebuild = fts.add_parser("rebuild", help="rebuild the FTS5 index from the documents (also when it is missing)")
    _persist_dir(rebuild)
    rebuild.add_argument(
        "-t",
        "--tokenizer",
        help="FTS5 tokenizer, e.g. trigram, 'unicode61 remove_diacritics 2' (default: keep the current one)",
    )
    rebuild.add_argument("--force", action="store_true", help="rebuild even when the index is healthy")
    _mutation(rebuild)
    rebuild.set_defaults(
        run=lambda a: commands.fts_rebuild(a.persist_dir, a.tokenizer, a.force, mutation_options(a), Output(a.json))
    )


def _add_collection(groups: Groups) -> None:
    collection = _subcommands(groups, "collection", "collection backup and restore")
    snap = collection.add_parser("snapshot", help="write one collection to a self-contained snapshot file")
    _persist_dir(snap)
    snap.add_argument("-c", "--collection", required=True, help="collection name")
    snap.add_argument("-d", "--database", default="default_database", help="database (default: %(default)s)")
    snap.add_argument("-o", "--out", required=True, help="snapshot file to write")
    snap.add_argument("--force", action="store_true", help="overwrite an existing file")
    _mutation(snap)
    snap.set_defaults(
        run=lambda a: commands.collection_snapshot(
            a.persist_dir, a.collection, a.database, a.out, a.force, mutation_options(a), Output(a.json)
        )
    )
    restore = collection.add_parser("restore", help="bring a collection back from a snapshot file")
    _persist_dir(restore)
    restore.add_argument("-i", "--input", required=True, help="snapshot file")
    restore.add_argument("--as", "--new-name", dest="new_name", help="restore under this name (fresh ids)")
    restore.add_argument("-d", "--database", help="target database (default: the snapshot's; created if missing)")
    restore.add_argument("--replace", action="store_true", help="replace a collection of that name (backed up first)")
    _mutation(restore)
    restore.set_defaults(
        run=lambda a: commands.collection_restore(
            a.persist_dir, a.input, a.new_name, a.database, a.replace, mutation_options(a), Output(a.json)
        )
    )


def _add_maintain(groups: Groups) -> None:
    maintain = groups.add_parser(
        "maintain", help="run a pipeline: plan it, review the plan file, apply exactly that (see pipelines/)"
    )
    _persist_dir(maintain)
    maintain.add_argument("--pipeline", default="maintain", help="pipeline name or YAML file (default: %(default)s)")
    maintain.add_argument("-o", "--out", help="with --plan: write the plan file here instead of stdout")
    maintain.add_argument("--apply", dest="apply_path", metavar="PLAN", help="apply a reviewed plan file")
    _mutation(maintain)
    maintain.set_defaults(
        run=lambda a: commands.maintain(
            a.persist_dir, a.pipeline, a.out, a.apply_path, mutation_options(a), Output(a.json)
        )
    )
    plan = groups.add_parser("plan", help="plan files").add_subparsers(
        dest="command", metavar="SUBCOMMAND", required=True
    )
    show = plan.add_parser("show", help="render a plan file as tables (and check its digest)")
    show.add_argument("plan_path", metavar="PLAN")
    _json(show)
    show.set_defaults(run=lambda a: commands.plan_show(a.plan_path, Output(a.json)))


def _add_backup(groups: Groups) -> None:
    backup = _subcommands(groups, "backup", "backups chops took")
    listing = backup.add_parser("list", help="list the backups of a persist dir")
    _persist_dir(listing)
    listing.add_argument("--backup-root", default=os.environ.get("CHOPS_BACKUP_ROOT"), help="where backups are")
    _json(listing)
    listing.set_defaults(run=lambda a: commands.backup_list(a.persist_dir, a.backup_root, Output(a.json)))
    rollback = groups.add_parser(
        "rollback", help="finish an interrupted run by restoring its backup, or restore the latest backup"
    )
    _persist_dir(rollback)
    rollback.add_argument("--backup", dest="backup_id", help="backup id to restore (default: the latest)")
    rollback.add_argument("--backup-root", default=os.environ.get("CHOPS_BACKUP_ROOT"), help="where backups are")
    rollback.add_argument("-y", "--yes", action="store_true", help="do not ask")
    _live(rollback, allow_live=False)
    _json(rollback)
    rollback.set_defaults(
        run=lambda a: commands.rollback(
            a.persist_dir, a.backup_id, a.backup_root, a.yes, Output(a.json), live_options(a)
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser_for(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    return commands.guarded(lambda: int(args.run(args)), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
