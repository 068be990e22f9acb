"""Is a Chroma running on this persist dir? Processes with its files open, and a heartbeat URL.

A running Chroma keeps every loaded HNSW index in memory, writes into its open files in place and
never re-reads them; changing those files (or rows it caches) under it loses acknowledged writes.
SQLite's lock only shows a process that is writing at that very moment, so we look for the process:

- /proc/PID/fd and /proc/PID/maps of every process, matched by (st_dev, st_ino) against
  chroma.sqlite3 (with its -wal/-journal/-shm) and every file in the segment folders. `stat` of an
  fd link reaches the real file, so a Chroma inside a container on this host is found too.
- Processes whose fds we may not read are counted when they could write chroma.sqlite3 (their uid
  or groups allow it, or root): never silently taken as safe.
- `--chroma-url`: a server that answers its heartbeat is running, wherever it runs.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from ops.errors import BadInput, OpsError

PROC = Path("/proc")
SQLITE_FILES = ("chroma.sqlite3", "chroma.sqlite3-wal", "chroma.sqlite3-journal", "chroma.sqlite3-shm")
PF_KTHREAD = 0x00200000
HEARTBEAT_PATHS = ("/api/v2/heartbeat", "/api/v1/heartbeat")
HEARTBEAT_TIMEOUT_S = 2.0
_CONTAINER_ID = re.compile(r"([0-9a-f]{64})")
_MAPS_LINE = re.compile(rb"^\S+ (\S+) \S+ (\S+) ([1-9]\d*) ", re.MULTILINE)
"""address perms offset dev inode path: (perms, dev, inode) of file mappings."""

FileKey = tuple[int, int]


class LiveProcess(BaseModel):
    """A process that has files of the persist dir open (or mapped)."""

    pid: int
    command: str
    container: str | None = None
    """The container id when /proc/PID/cgroup names one (docker, containerd, kubernetes)."""
    files: list[str]
    """The persist dir's files it holds, relative to the persist dir."""
    writes: bool = True
    """Whether it holds any of them open (or mapped) for writing. A process that only reads (a
    `mode=ro` SQLite connection, another chops reading) cannot lose writes: it is reported, not refused."""

    def describe(self) -> str:
        where = f", container {self.container[:12]}" if self.container else ""
        return f"pid {self.pid}: {self.command}{where}"


class LiveScan(BaseModel):
    available: bool = True
    """False where there is no /proc to look at (not Linux)."""
    processes: list[LiveProcess] = []
    unchecked: list[int] = []
    """Pids we may not inspect that could write chroma.sqlite3."""

    @property
    def writers(self) -> list[LiveProcess]:
        return [p for p in self.processes if p.writes]

    def unchecked_line(self) -> str:
        n, shown = len(self.unchecked), ", ".join(map(str, self.unchecked[:5]))
        return (
            f"{n} process{'es' if n > 1 else ''} could not be checked for open files of the persist dir "
            f"(pid {shown}{', ...' if n > 5 else ''})"
        )

    def warnings(self) -> list[str]:
        lines = [f"{holders_line([p], 'the persist dir')} read-only" for p in self.processes if not p.writes]
        if not self.available:
            lines.append("cannot check for a running Chroma here (no /proc); pass --chroma-url to ask a server")
        if self.unchecked:
            lines.append(f"{self.unchecked_line()}: run as root or as the Chroma user")
        return lines


def persist_dir_files(root: Path) -> dict[FileKey, str]:
    """(st_dev, st_ino) of chroma.sqlite3 and its companions and of every file in a segment folder.

    Segment files are named by the inode readdir reports (no stat per file: 5,000 files at 1,000
    collections), on the folder's device; ext4, xfs, btrfs, NFS and overlayfs report the same inode
    to readdir and to stat."""
    found: dict[FileKey, str] = {}
    for name in SQLITE_FILES:
        _add(found, root / name, name)
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                device = entry.stat(follow_symlinks=False).st_dev
                with os.scandir(entry.path) as files:
                    for f in files:
                        if f.is_file(follow_symlinks=False):
                            found[(device, f.inode())] = f"{entry.name}/{f.name}"
    return found


def _add(found: dict[FileKey, str], path: Path, name: str) -> None:
    try:
        st = path.stat()
    except OSError:
        return
    if stat.S_ISREG(st.st_mode):
        found[(st.st_dev, st.st_ino)] = name


def scan(root: Path) -> LiveScan:
    """Every other process that has a file of the persist dir open or mapped."""
    if not (PROC / "self" / "fd").is_dir():
        return LiveScan(available=False)
    targets = persist_dir_files(root)
    db = root / "chroma.sqlite3"
    sqlite_stat = (db if db.exists() else root).stat()  # (a missing database, being restored: the dir's)
    inodes = {str(ino).encode() for _, ino in targets}
    result = LiveScan()
    for pid in _pids():
        held = _held_files(pid, targets, inodes)
        if held is None:
            if _could_write(pid, sqlite_stat):
                result.unchecked.append(pid)
        elif held:
            files, writes = sorted(held), any(held.values())
            process = LiveProcess(pid=pid, command=_command(pid), container=_container(pid), files=files, writes=writes)
            result.processes.append(process)
    return result


def _pids() -> Iterator[int]:
    me = os.getpid()
    for name in os.listdir(PROC):
        if name.isdigit() and int(name) != me:
            yield int(name)


def _held_files(pid: int, targets: dict[FileKey, str], inodes: set[bytes]) -> dict[str, bool] | None:
    """The target files the process holds, each with whether it may write it; None when we may not
    look (a process that has exited holds nothing). An fd link's mode bits are its open mode.
    Plain string paths: pathlib would be most of the scan's time."""
    fd_dir = f"/proc/{pid}/fd/"
    try:
        fds = os.listdir(fd_dir)
    except PermissionError:
        return None
    except OSError:
        return {}
    held: dict[str, bool] = {}
    for fd in fds:
        link = fd_dir + fd
        try:
            st = os.stat(link)
            name = targets.get((st.st_dev, st.st_ino))
            if name is not None:
                held[name] = held.get(name, False) or bool(os.lstat(link).st_mode & stat.S_IWUSR)
        except OSError:
            continue
    for name, writable in _mapped(pid, targets, inodes).items():
        held[name] = held.get(name, False) or writable
    return held


def _mapped(pid: int, targets: dict[FileKey, str], inodes: set[bytes]) -> dict[str, bool]:
    """Target files mapped into the process (SQLite's -shm in WAL mode), from /proc/PID/maps, each
    with whether the mapping is writable. The inode column is matched first, in C (re.findall)."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as fh:
            data = fh.read()
    except OSError:
        return {}
    held: dict[str, bool] = {}
    for perms, device, inode in _MAPS_LINE.findall(data):
        if inode not in inodes:
            continue
        major, minor = device.split(b":")
        name = targets.get((os.makedev(int(major, 16), int(minor, 16)), int(inode)))
        if name is not None:
            held[name] = held.get(name, False) or b"w" in perms
    return held


def _could_write(pid: int, sqlite_stat: os.stat_result) -> bool:
    """Whether a process we cannot inspect could write chroma.sqlite3 (kernel threads cannot)."""
    try:
        flags = int((PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[6])
        status = (PROC / str(pid) / "status").read_text()
    except (OSError, IndexError, ValueError):
        return False  # exited meanwhile
    if flags & PF_KTHREAD:
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uid = int(fields["Uid"].split()[1])
    gids = {int(g) for g in fields.get("Groups", "").split()} | {int(fields["Gid"].split()[1])}
    mode = sqlite_stat.st_mode
    if uid == 0:
        return True
    if uid == sqlite_stat.st_uid:
        return bool(mode & stat.S_IWUSR)
    if sqlite_stat.st_gid in gids:
        return bool(mode & stat.S_IWGRP)
    return bool(mode & stat.S_IWOTH)


def _command(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    if words and Path(words[0]).name.startswith("python") and len(words) > 1:
        words = words[1:]  # "python3 /usr/bin/chroma run ..." reads as "chroma run ..."
    if words:
        words[0] = Path(words[0]).name
    text = " ".join(" ".join(words).split()) or "?"  # newlines and tabs in an argument: one line
    return text if len(text) <= 120 else text[:117] + "..."


def _container(pid: int) -> str | None:
    try:
        text = (PROC / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    match = _CONTAINER_ID.search(text)
    return match.group(1) if match else None


def chroma_answers(url: str) -> bool:
    """True when a Chroma server answers its heartbeat at url; False when nothing answers within
    2 s (taken as stopped). A server that answers but is not Chroma is an error."""
    import urllib.error  # here, not at the top: urllib.request brings http.client, ssl and email
    import urllib.request

    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise BadInput(f"--chroma-url {url} is not an http(s) URL", "pass e.g. --chroma-url http://localhost:8000")
    statuses = []
    for path in HEARTBEAT_PATHS:
        try:
            with urllib.request.urlopen(base + path, timeout=HEARTBEAT_TIMEOUT_S) as response:
                if _is_heartbeat(response.read(4096)):
                    return True
                statuses.append(f"{path}: {response.status} without a heartbeat")
        except urllib.error.HTTPError as exc:
            statuses.append(f"{path}: HTTP {exc.code}")
        except (TimeoutError, urllib.error.URLError, ConnectionError):
            return False
    raise BadInput(f"{url} answers but is not a Chroma server ({'; '.join(statuses)})", "check --chroma-url")


def _is_heartbeat(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and "nanosecond heartbeat" in data


class LiveChroma(OpsError):
    """A running Chroma holds the persist dir, and the change may not run beside it."""


def holders_line(processes: list[LiveProcess], root: Path | str) -> str:
    """`chroma (pid 4242: chroma run --path /data) has /data open`, for one or more processes."""
    first = processes[0]
    label = "chroma" if "chroma" in first.command.lower() else "a process"
    more = len(processes) - 1
    others = f" and {more} more process{'es' if more > 1 else ''}" if more else ""
    return f"{label} ({first.describe()}){others} {'have' if more else 'has'} {root} open"


def hidden(process: LiveProcess) -> LiveProcess:
    """Privacy mode: no paths or arguments, only the program's name."""
    return process.model_copy(update={"command": process.command.split(" ", 1)[0], "files": []})
