"""Backups of what a run touches, and restoring them.

One implementation serves the runner's automatic backup, `chops backup list`, `chops rollback`
and (later) `db snapshot`. A backup is a folder in the backup root:

    <root>/<UTC time>-<run id>/
        chroma.sqlite3             copied through sqlite's online backup API (a raw copy only of a
                                   file SQLite cannot open, before a restore replaces it)
        segments/<folder>/...      the HNSW folders the plan touches, file by file
        manifest.json              written last: a backup without it is incomplete

manifest.json lists every file with its size and sha256, so a restore can prove it restores
exactly what was saved.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import sqlite3
import stat
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import orjson
from pydantic import BaseModel, ValidationError

from ops import __version__
from ops.engine import failpoints
from ops.engine.lock import hand_over
from ops.errors import BadInput, OpsError
from ops.storage.fs import (
    atomic_write,
    copy_file,
    fsync_dir,
    remove_tree,
    sha256_file,
    sqlite_content_sha256,
    subfolders,
    sync_filesystem,
    tree_size,
)
from ops.storage.hnsw_files import HEADER_FILE, PICKLE_FILE
from ops.storage.same_pages import same_database
from ops.storage.sqlite_ro import SQLITE_FILE_NAME, readonly_uri
from ops.storage.write_mark import WriteMark

MANIFEST = "manifest.json"
CREATED_SNAPSHOTS = "created-snapshots.json"
"""Beside the manifest of a completed run's backup: the snapshot folders that run wrote (of the very
state the backup holds), so that restoring the backup removes them and the same plan can be made again."""
COMPLETED = "completed.json"
"""Beside the manifest: written once the run that took the backup finished (its journal closed). A backup
without it belongs to a run that failed, was rolled back or killed (or to a chops before this file)."""
NO_DATABASE = "no-database"
"""Beside the manifest: the run that took the backup found no chroma.sqlite3 and put one in place (a
db restore). Its rollback removes that database again; restored later, the backup's folders would sit
beside a database of another time, so `chops rollback --backup` refuses it."""
SQLITE_FULL = 13
SEGMENTS = "segments"
BACKUP_FORMAT_VERSION = 1
RESTORE_SUFFIX = ".chops-restore"
BACKUP_NAME = re.compile(r"^\d{8}T\d{6}")  # other folders in the root (e.g. snapshots/) are not backups
OLD_SUFFIX = ".chops-old"


class BackupError(OpsError):
    """A backup could not be written, read or restored."""


class FileEntry(BaseModel):
    path: str
    """Relative to the backup folder (and, restored, to the persist dir)."""
    size: int
    sha256: str
    content_sha256: str | None = None
    """For chroma.sqlite3: digest of its pages without the copy counters (see ops.storage.fs)."""


class BackupManifest(BaseModel):
    format_version: int = BACKUP_FORMAT_VERSION
    tool_version: str = __version__
    backup_id: str
    created_at: str
    persist_dir: str
    reason: str
    includes_sqlite: bool
    folders: list[str]
    """Top-level folders of the persist dir saved here; restore puts back exactly these."""
    files: list[FileEntry]
    writes: WriteMark | None = None
    """chroma.sqlite3's write mark in the state this backup holds (read under the run's lock before it
    was taken; None: not recorded). A restore over a dir written past it, and past what the run left,
    would drop those writes."""
    folder_states: dict[str, str] | None = None
    """Every segment folder's index as the backup was taken (folder_state): a restore that puts no
    copy of a folder back refuses where its index was written since, as chroma.sqlite3 would then sit
    beside an index of another time. None: not recorded (an earlier version)."""

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


OWNER_FILE = "persist_dir.txt"
"""Written first into a backup folder: the persist dir it is of, also while it is incomplete. A backup
root may be shared by several persist dirs (--backup-root): listing, pruning and restoring take only
the dir's own backups."""


def default_backup_root(persist_dir: Path) -> Path:
    """A sibling of the persist dir: /data/chroma -> /data/chroma.chops-backups."""
    return persist_dir.parent / f"{persist_dir.name}.chops-backups"


def estimate_backup_bytes(persist_dir: Path, include_sqlite: bool, folders: list[str]) -> int:
    total = (persist_dir / SQLITE_FILE_NAME).stat().st_size if include_sqlite else 0
    return total + sum(tree_size(persist_dir / name) for name in folders if (persist_dir / name).is_dir())


def all_folders(root: Path) -> list[str]:
    """Every top-level folder of the persist dir a full backup or snapshot saves."""
    return [p.name for p in subfolders(root) if not p.name.startswith(".")]


def folder_state(folder: Path) -> str:
    """A digest of what a write to the folder's index changes: header.bin (element count, capacity,
    entry point) and index_metadata.pickle (labels, max_seq_id). Not the other files: chromadb 1.5
    rewrites a loaded index on every open, with the same records but other bytes past the last
    element (measured: length.bin and data_level0.bin change, header.bin stays). A delete alone (a
    flag in data_level0.bin) is not seen."""
    digest = hashlib.sha256()
    for name in (HEADER_FILE, PICKLE_FILE):
        with contextlib.suppress(OSError):
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()


def link_backup(source: Path, target: Path, reason: str) -> BackupManifest | None:
    """A copy of a verified backup at `target` made of hard links to its files (backup files are
    never changed after they are written, and restoring copies them), with a manifest of its own.
    None when the file system cannot link them (another device): then nothing is left at target."""
    manifest = read_manifest(source)
    try:
        target.mkdir(parents=True, exist_ok=False)
        (target / OWNER_FILE).write_text(manifest.persist_dir)
        made = {target}
        for entry in manifest.files:
            link = target / entry.path
            if link.parent not in made:
                link.parent.mkdir(parents=True, exist_ok=True)
                made.add(link.parent)
            os.link(source / entry.path, link)
        for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(folder)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.rmtree(target, ignore_errors=True)
        return None
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    copy = manifest.model_copy(update={"backup_id": target.name, "created_at": created, "reason": reason})
    atomic_write(target / MANIFEST, orjson.dumps(copy.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
    fsync_dir(target.parent)
    return copy


def new_backup_id(run_id: str) -> str:
    """Sortable by time (microseconds), so the newest backup is the last name in the root."""
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}-{run_id}"


def take_backup(
    persist_dir: Path,
    target: Path,
    reason: str,
    include_sqlite: bool,
    folders: list[str],
    damaged: bool = False,
    writes: WriteMark | None = None,
) -> BackupManifest:
    """Save chroma.sqlite3 (online backup API) and the given folders into target; manifest last.
    `damaged`: chroma.sqlite3 cannot be opened as a database, so its bytes are copied as they are
    (restoring them puts back the very file: restore_sqlite replaces a file that is no database)."""
    created = datetime.now(timezone.utc)
    backup_id = target.name
    states = {name: folder_state(persist_dir / name) for name in all_folders(persist_dir)}
    target.mkdir(parents=True, exist_ok=False)
    (target / OWNER_FILE).write_text(str(persist_dir))
    entries: list[FileEntry] = []
    if include_sqlite:
        save = _copy_damaged_sqlite if damaged else _backup_sqlite
        entries.append(save(persist_dir / SQLITE_FILE_NAME, target / SQLITE_FILE_NAME))
    for name in folders:
        entries += _backup_folder(persist_dir / name, target / SEGMENTS / name, target)
    if folders:
        sync_filesystem(target)  # every folder copy on disk before the manifest says the backup exists
    manifest = BackupManifest(
        backup_id=backup_id,
        created_at=created.isoformat(timespec="seconds"),
        persist_dir=str(persist_dir),
        reason=reason,
        includes_sqlite=include_sqlite,
        folders=folders,
        files=entries,
        writes=writes,
        folder_states=states,
    )
    atomic_write(target / MANIFEST, orjson.dumps(manifest.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
    fsync_dir(target.parent)
    return manifest


def _backup_sqlite(source: Path, target: Path) -> FileEntry:
    src = sqlite3.connect(readonly_uri(source), uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst, pages=4096)
    finally:
        dst.close()
        src.close()
    with target.open("rb+") as fh:
        os.fsync(fh.fileno())
    with ThreadPoolExecutor(max_workers=2) as pool:  # hashlib and reads release the GIL: one core each
        sha256, content_sha256 = pool.submit(sha256_file, target), pool.submit(sqlite_content_sha256, target)
        return FileEntry(
            path=SQLITE_FILE_NAME,
            size=target.stat().st_size,
            sha256=sha256.result(),
            content_sha256=content_sha256.result(),
        )


def _copy_damaged_sqlite(source: Path, target: Path) -> FileEntry:
    copy_file(source, target, durable=True)
    return FileEntry(path=SQLITE_FILE_NAME, size=target.stat().st_size, sha256=sha256_file(target))


def _backup_folder(source: Path, target: Path, backup_dir: Path) -> list[FileEntry]:
    entries = []
    target.mkdir(parents=True)
    for path in sorted(source.rglob("*")):
        out = target / path.relative_to(source)
        if path.is_dir():
            out.mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            copy_file(path, out)
            rel = str(out.relative_to(backup_dir))
            entries.append(FileEntry(path=rel, size=out.stat().st_size, sha256=sha256_file(out)))
    return entries


class RunCompletion(BaseModel):
    """The honest record of a run that finished: the backup its run took, plus when that run completed."""

    run_id: str
    command: str
    """The steps it applied, as the manifest's reason names them."""
    pipeline: str | None
    """The pipeline of a `maintain` plan (maintain, nightly, ...); None for a single command."""
    completed_at: str
    rolled_back_at: str | None = None
    """When `chops rollback` restored this backup or an earlier one: the run's changes are undone."""
    writes: WriteMark | None = None
    """chroma.sqlite3's write mark as the run left it (None: recorded before chops kept it)."""
    stopped: bool = False
    """The run stopped part-way without a rollback (another process wrote, or --keep-changes)."""


def record_completion(
    backup_dir: Path,
    run_id: str,
    command: str,
    pipeline: str | None,
    writes: WriteMark | None = None,
    stopped: bool = False,
) -> None:
    completed = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = RunCompletion(
        run_id=run_id, command=command, pipeline=pipeline, completed_at=completed, writes=writes, stopped=stopped
    )
    _write_completion(backup_dir, record)


def record_rollbacks(backup_dir: Path) -> None:
    """`backup_dir` was restored: the runs it and every later backup of its root were taken for are
    undone, so none of them is a completed run any more (backup list, the last-success metric).
    Best effort: the restore has happened either way."""
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for folder, _ in list_backups(backup_dir.parent, read_manifest(backup_dir).persist_dir):
        completion = read_completion(folder) if folder.name >= backup_dir.name else None
        if completion is None or completion.rolled_back_at is not None:
            continue
        try:
            _write_completion(folder, completion.model_copy(update={"rolled_back_at": at}))
        except OSError:
            continue


def _write_completion(backup_dir: Path, record: RunCompletion) -> None:
    atomic_write(backup_dir / COMPLETED, orjson.dumps(record.model_dump(mode="json"), option=orjson.OPT_INDENT_2))


def read_completion(backup_dir: Path) -> RunCompletion | None:
    """When the backup's run finished; None when it did not (or the record is unreadable)."""
    try:
        return RunCompletion.model_validate(orjson.loads((backup_dir / COMPLETED).read_bytes()))
    except (OSError, orjson.JSONDecodeError, ValidationError):
        return None


def remove_snapshot_folder(folder: Path) -> bool:
    """Remove a (possibly partial) snapshot folder a rolled-back run wrote; anything that does not look
    like one (other files in it) is left alone."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    allowed = {SQLITE_FILE_NAME, f"{SQLITE_FILE_NAME}-journal", SEGMENTS, MANIFEST, OWNER_FILE}
    if any(p.name not in allowed and not p.name.startswith(f".{MANIFEST}.tmp-") for p in folder.iterdir()):
        return False
    shutil.rmtree(folder)
    return True


def record_created_snapshots(backup_dir: Path, folders: list[str]) -> None:
    if folders:
        atomic_write(backup_dir / CREATED_SNAPSHOTS, orjson.dumps(sorted(folders), option=orjson.OPT_INDENT_2))


def remove_created_snapshots(backup_dir: Path, backup_root: Path) -> list[str]:
    """After the backup was restored: remove the snapshot folders its run wrote (only folders below
    the backup root that look like snapshots); the backup itself holds the same state."""
    try:
        folders = orjson.loads((backup_dir / CREATED_SNAPSHOTS).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return []
    removed = []
    for name in folders if isinstance(folders, list) else []:
        folder = Path(str(name))
        if folder.resolve().is_relative_to(backup_root.resolve()) and remove_snapshot_folder(folder):
            removed.append(str(folder))
    return removed


def copy_persist_dir(root: Path, target: Path) -> Path:
    """A consistent working copy laid out as a persist dir (sqlite through the backup API), writable
    by its owner whatever the modes of the original (a copy of a read-only dir is worked on)."""
    target.mkdir(parents=True)
    _backup_sqlite(root / SQLITE_FILE_NAME, target / SQLITE_FILE_NAME)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        shutil.copytree(folder, target / folder.name)
    for path in (target, *target.rglob("*")):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR | (stat.S_IXUSR if path.is_dir() else 0))
    return target


def read_manifest(backup_dir: Path) -> BackupManifest:
    try:
        return BackupManifest.model_validate(orjson.loads((backup_dir / MANIFEST).read_bytes()))
    except FileNotFoundError:
        raise BackupError(f"{backup_dir} is an incomplete backup (no {MANIFEST})", "pick another backup") from None
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise BackupError(f"{backup_dir / MANIFEST} is unreadable ({type(exc).__name__})") from None
    except (OSError, RuntimeError) as exc:  # not a folder, a folder named manifest.json, a symlink loop
        raise BackupError(f"{backup_dir / MANIFEST} cannot be read ({exc})", "pick another folder") from None


def list_backups(root: Path, of: str | Path | None = None) -> list[tuple[Path, BackupManifest | None]]:
    """Backups in the root, oldest first; the manifest is None for an incomplete one. of: only the
    backups of that persist dir (and incomplete ones an earlier version left, which name none)."""
    if not root.is_dir():
        return []
    out: list[tuple[Path, BackupManifest | None]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and BACKUP_NAME.match(p.name)):
        try:
            out.append((folder, read_manifest(folder)))
        except BackupError:
            out.append((folder, None))
    if of is None:
        return out
    return [(folder, manifest) for folder, manifest in out if backup_owner(folder, manifest) in (None, str(of))]


def backup_owner(folder: Path, manifest: BackupManifest | None) -> str | None:
    """The persist dir a backup is of; None for an incomplete one of an earlier version."""
    if manifest is not None:
        return manifest.persist_dir
    try:
        return (folder / OWNER_FILE).read_text()
    except OSError:
        return None


def later_backups(backup_dir: Path, of: str) -> list[tuple[Path, BackupManifest]]:
    """The complete backups of persist dir `of` taken after backup_dir, oldest first, with their manifests."""
    backups = list_backups(backup_dir.parent, of)
    return [(folder, manifest) for folder, manifest in backups if folder.name > backup_dir.name and manifest]


def find_backup(root: Path, backup_id: str | None, of: Path) -> Path:
    """The backup of persist dir `of` named (or its newest). One whose manifest.json is there but
    unreadable is refused, never passed over for an older one; one without it (a backup cut short)
    is not a backup; one of another persist dir (a shared backup root) is refused by name."""
    backups = list_backups(root)
    for path, manifest in reversed(backups):
        if backup_id is not None and backup_id not in (path.name, manifest.backup_id if manifest else None):
            continue
        if (owner := backup_owner(path, manifest)) not in (None, str(of)):
            if backup_id is None:
                continue
            raise BadInput(
                f"backup {path.name} in {root} is of {owner}, not of {of}",
                f"pass --backup ID of a backup of {of} (chops backup list {of} --backup-root {root})",
            )
        if manifest is not None:
            return path
        if (path / MANIFEST).exists() or backup_id is not None:
            _refuse_unreadable(path)
    if backup_id is not None:
        raise BadInput(f"no backup {backup_id!r} in {root}", "see: chops backup list PERSIST_DIR")
    raise BadInput(f"no backup in {root}", "pass --backup-root if the backups live elsewhere")


def _refuse_unreadable(path: Path) -> None:
    try:
        read_manifest(path)
    except BackupError as exc:
        raise BackupError(
            f"{exc.message}: backup {path.name} cannot be restored",
            "pass --backup ID of another backup (see: chops backup list PERSIST_DIR)",
        ) from None


def verify_backup(backup_dir: Path, manifest: BackupManifest) -> None:
    if manifest.includes_sqlite and not any(entry.path == SQLITE_FILE_NAME for entry in manifest.files):
        raise BackupError(
            f"backup {backup_dir.name} is damaged: its manifest lists no {SQLITE_FILE_NAME}",
            "restore from another backup",
        )
    for entry in manifest.files:
        path = backup_dir / entry.path
        if not path.is_file() or path.stat().st_size != entry.size or sha256_file(path) != entry.sha256:
            raise BackupError(
                f"backup {backup_dir.name} is damaged: {entry.path} does not match its manifest",
                "restore from another backup",
            )


def checked_manifest(backup_dir: Path) -> BackupManifest:
    """The manifest of a backup whose every file matches it."""
    manifest = read_manifest(backup_dir)
    verify_backup(backup_dir, manifest)
    return manifest


def restore_backup(
    backup_dir: Path, persist_dir: Path, checked: BackupManifest | None = None, held: sqlite3.Connection | None = None
) -> BackupManifest:
    """Put back exactly what the backup saved; idempotent, so it can be re-run after a crash.

    What already equals the backup is left alone (nothing is written for it), so a run that failed
    before changing a file rolls back without rewriting it, also on a full disk. `checked`: the
    manifest if `checked_manifest` already verified the backup. held: see restore_database."""
    manifest = checked or checked_manifest(backup_dir)
    restore_database(backup_dir, persist_dir, manifest, held)
    restore_folders(backup_dir, persist_dir, manifest)
    return manifest


def restore_chain(backup_dirs: list[Path], persist_dir: Path, held: sqlite3.Connection | None = None) -> None:
    """Put the dir back as it was before the first backup's run, undoing the runs of the later backups
    (oldest first) too: each part (chroma.sqlite3, each segment folder) from the oldest backup that
    holds it, as a run saves exactly what it changes. Every backup is checked before anything is
    restored. held: see restore_database."""
    chain = [(folder, checked_manifest(folder)) for folder in backup_dirs]
    restored: set[str] = set()
    for folder, manifest in chain:
        if manifest.includes_sqlite and SQLITE_FILE_NAME not in restored:
            restore_database(folder, persist_dir, manifest, held)
            restored.add(SQLITE_FILE_NAME)
        restore_folders(folder, persist_dir, manifest, skip=restored)
        restored.update(manifest.folders)


def changed_unsaved(manifests: list[BackupManifest], persist_dir: Path) -> list[str]:
    """Where the chain puts chroma.sqlite3 back: segment folders that changed since the first backup
    was taken and that no backup of the chain holds (restoring would leave them as they are now), or
    whose oldest copy in the chain was taken after they changed (it would put back that later state),
    beside a chroma.sqlite3 of another time. (Where none holds chroma.sqlite3, it stays as it is:
    the write marks tell whether it changed.)"""
    recorded = manifests[0].folder_states
    if recorded is None or not any(m.includes_sqlite for m in manifests):
        return []
    now = {name: folder_state(persist_dir / name) for name in all_folders(persist_dir)}
    copied: dict[str, str | None] = {}  # each folder's state where the chain's oldest copy of it was taken
    for manifest in manifests:
        for name in manifest.folders:
            copied.setdefault(name, (manifest.folder_states or {}).get(name, recorded.get(name)))
    return sorted(name for name, state in recorded.items() if copied.get(name, now.get(name)) != state)


def restore_database(
    backup_dir: Path, persist_dir: Path, manifest: BackupManifest, held: sqlite3.Connection | None = None
) -> None:
    """The backup's chroma.sqlite3 put back, where it holds one and the live one differs. held: a write
    lock on the live database (a failed run's), handed over to the copy of its pages (lock.hand_over)."""
    saved_db, live_db = backup_dir / SQLITE_FILE_NAME, persist_dir / SQLITE_FILE_NAME
    if manifest.includes_sqlite and not same_database(live_db, saved_db):
        restore_sqlite(saved_db, live_db, held)


def restore_folders(
    backup_dir: Path, persist_dir: Path, manifest: BackupManifest, skip: set[str] | frozenset[str] = frozenset()
) -> None:
    """The backup's segment folders (but those in `skip`) put back where they differ from it."""
    for name in manifest.folders:
        if name not in skip and _differences(manifest, persist_dir, name):
            _restore_folder(backup_dir / SEGMENTS / name, persist_dir / name)


SQLITE_SIDE_FILES = ("-journal", "-wal", "-shm")
"""What SQLite keeps beside a database (name + suffix): they belong to that very file."""


def sqlite_files(db: Path) -> list[Path]:
    """chroma.sqlite3 and its side files (rollback journal, WAL, shared memory), present or not."""
    return [db.with_name(db.name + side) for side in ("", *SQLITE_SIDE_FILES)]


DAMAGED_PREFIX = "damaged-"
"""A folder of the backup root holding a chroma.sqlite3 a restore replaced because it could not be opened."""


def keep_damaged_database(live: Path, backup_root: Path) -> Path:
    """A durable copy of a chroma.sqlite3 that cannot be opened as a database (and of its journal
    files), in a new folder of the backup root, before a restore replaces it: its pages may still
    hold writes newer than the backup (`sqlite3 FILE .recover`). Copied, not moved: a run killed
    before the restore finds the dir as it was."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    folder = backup_root / f"{DAMAGED_PREFIX}{stamp}"
    try:
        folder.mkdir(parents=True)
        for path in sqlite_files(live):
            if path.is_file():
                copy_file(path, folder / path.name, durable=True)
        fsync_dir(folder)
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)  # no partial copy that looks whole
        raise OpsError(
            f"cannot keep a copy of the damaged {live.name} in {backup_root} ({exc.strerror or exc}); nothing changed",
            "free some space there, or pass --backup-root DIR on a disk with room",
        ) from exc
    return folder


def restore_sqlite(backup: Path, live: Path, held: sqlite3.Connection | None = None) -> None:
    """Copy the saved pages into the live database through the backup API (honours locks;
    other connections see a consistent database). Falls back to an atomic file replace when
    the live file cannot be opened as a database at all. held: see restore_database."""
    src = sqlite3.connect(readonly_uri(backup), uri=True)
    try:
        try:
            _copy_pages(src, live, rollback_journal=True, held=held)
        except sqlite3.OperationalError as exc:
            if not sqlite_full(exc) or _journal_mode(live) == "wal":
                raise  # locked, I/O error: the live file is a database; replacing it would not help
            # No room for SQLite's rollback journal of the restore (the pages overwrite pages in place
            # and need none). Safe without it: the run's own journal stays until this returns, so a
            # kill here leaves `chops rollback` to copy every page again.
            _copy_pages(src, live, rollback_journal=False)
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError:
        _replace_file(backup, live)
    finally:
        src.close()


UNJOURNALED_STEP_PAGES = 256


def _copy_pages(
    src: sqlite3.Connection, live: Path, rollback_journal: bool, held: sqlite3.Connection | None = None
) -> None:
    dst = sqlite3.connect(live, timeout=30)
    try:
        if held is not None:
            hand_over(held, dst)
        if rollback_journal:
            src.backup(dst, pages=4096)
        else:
            dst.execute("PRAGMA journal_mode = OFF")
            src.backup(dst, pages=UNJOURNALED_STEP_PAGES, progress=_unjournaled_step)
    finally:
        dst.close()


def _unjournaled_step(status: int, remaining: int, total: int) -> None:
    failpoints.hit("restore.unjournaled_step")


def _journal_mode(live: Path) -> str:
    """'wal' for a database in WAL mode (persistent, needs its log file); a rollback mode otherwise."""
    with closing(sqlite3.connect(readonly_uri(live), uri=True)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def sqlite_full(exc: sqlite3.Error) -> bool:
    """SQLITE_FULL: the disk (or a quota) has no room for what SQLite had to write."""
    return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "database or disk is full" in str(exc)


def _replace_file(backup: Path, live: Path) -> None:
    """The live file replaced by the backup's atomically, keeping its owner and mode (Chroma may run as
    another user) and, where it is a symbolic link, the link: its target is replaced."""
    live = live.resolve()
    tmp = live.with_name(live.name + RESTORE_SUFFIX)
    try:
        copy_file(backup, tmp, durable=True)
        if live.exists():
            was, made = live.stat(), tmp.stat()
            os.chmod(tmp, stat.S_IMODE(was.st_mode))
            if (was.st_uid, was.st_gid) != (made.st_uid, made.st_gid):
                with contextlib.suppress(PermissionError):  # not root: the file is ours, as it was before
                    os.chown(tmp, was.st_uid, was.st_gid)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for side in SQLITE_SIDE_FILES:
        live.with_name(live.name + side).unlink(missing_ok=True)
    os.replace(tmp, live)
    fsync_dir(live.parent)


def _restore_folder(saved: Path, live: Path) -> None:
    staging = live.with_name(live.name + RESTORE_SUFFIX)
    old = live.with_name(live.name + OLD_SUFFIX)
    remove_tree(staging)
    try:
        shutil.copytree(saved, staging, copy_function=shutil.copy2)
    except BaseException:
        remove_tree(staging)
        raise
    if live.exists():
        remove_tree(old)
        os.replace(live, old)
    os.replace(staging, live)
    fsync_dir(live.parent)
    remove_tree(old)


def live_matches_backup(backup_dir: Path, persist_dir: Path) -> list[str]:
    """Files of the persist dir that differ from the backup (sqlite compared page by page)."""
    manifest = read_manifest(backup_dir)
    saved_db, live_db = backup_dir / SQLITE_FILE_NAME, persist_dir / SQLITE_FILE_NAME
    mismatched = [SQLITE_FILE_NAME] if manifest.includes_sqlite and not same_database(live_db, saved_db) else []
    for name in manifest.folders:
        mismatched += _differences(manifest, persist_dir, name)
    return mismatched


def _differences(manifest: BackupManifest, persist_dir: Path, folder: str) -> list[str]:
    """Files of one saved folder that differ from the backup, are missing, or were not saved."""
    live = persist_dir / folder
    if not live.is_dir():
        return [folder]
    prefix = f"{SEGMENTS}/{folder}/"
    saved = {e.path.removeprefix(f"{SEGMENTS}/"): e for e in manifest.files if e.path.startswith(prefix)}
    different = [relative for relative, e in saved.items() if _live_differs(e, persist_dir / relative)]
    present = (str(p.relative_to(persist_dir)) for p in live.rglob("*") if p.is_file())
    return different + [relative for relative in present if relative not in saved]


def _live_differs(entry: FileEntry, live: Path) -> bool:
    return not live.is_file() or live.stat().st_size != entry.size or sha256_file(live) != entry.sha256


def prune_backups(root: Path, keep: int, of: Path) -> list[Path]:
    """Delete the oldest complete backups of persist dir `of` beyond `keep` (its incomplete ones
    always; another dir's, in a shared root, never)."""
    backups = list_backups(root, of)
    complete = [p for p, m in backups if m is not None]
    doomed = [p for p, m in backups if m is None] + (complete[:-keep] if keep > 0 else complete)
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
