"""Whether a live chroma.sqlite3 holds exactly the pages of a saved copy.

The bytes are compared in a child process. POSIX drops every lock a process holds on a file when
it closes any descriptor of that file, so reading the live database with this process's open()
and close() would let go of the runner's write lock (SQLite keeps its own descriptors open for that
very reason). A child's descriptors are its own. This file imports nothing but the standard
library: the child runs it by path, without loading chroma-ops.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

COPY_HEADER_FIELDS = ((24, 28), (40, 44), (92, 100))
"""Header fields SQLite rewrites when it copies pages: change counter, schema cookie, version-valid-for
and the version of the SQLite library that wrote the file last (Chroma's SQLite is not Python's)."""

_BLOCK = 1 << 20
_SAME, _DIFFERENT = 0, 1


def same_database(live: Path, saved: Path) -> bool:
    """The live database holds exactly the saved pages, and no journal beside it could still change
    them. Compared byte by byte (copy counters aside), stopping at the first difference."""
    for side in ("-journal", "-wal"):
        journal = live.with_name(live.name + side)
        if journal.is_file() and journal.stat().st_size > 0:
            return False
    if not live.is_file() or live.stat().st_size != saved.stat().st_size:
        return False
    done = subprocess.run(
        [sys.executable, "-I", __file__, str(live), str(saved)], capture_output=True, text=True, check=False
    )
    if done.returncode not in (_SAME, _DIFFERENT):
        said = done.stderr.strip().splitlines()
        raise OSError(f"could not compare {live} with {saved}: {said[-1] if said else done.returncode}")
    return done.returncode == _SAME


def _same_bytes(live: Path, saved: Path) -> bool:
    """In the child: the two files byte by byte, the copy counters of the header left out."""
    with live.open("rb") as fa, saved.open("rb") as fb:
        head_a, head_b = bytearray(fa.read(100)), bytearray(fb.read(100))
        for start, end in COPY_HEADER_FIELDS:
            head_a[start:end] = head_b[start:end] = bytes(end - start)
        if head_a != head_b:
            return False
        while block := fa.read(_BLOCK):
            if block != fb.read(_BLOCK):
                return False
        return not fb.read(1)


if __name__ == "__main__":
    sys.exit(_SAME if _same_bytes(Path(sys.argv[1]), Path(sys.argv[2])) else _DIFFERENT)
