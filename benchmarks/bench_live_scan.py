"""What looking for a running Chroma costs a command (issue 13: at most 30 ms on this machine).

    python3 benchmarks/bench_live_scan.py [--repeat 30]

Each row times `ops.engine.live.scan(DIR)` in-process (median and max of --repeat runs, after one
warm-up) on persist dirs written by the installed chromadb, while the machine runs what the row
says. The scan is the only work a command adds for this, so its time is the time added.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ops.engine import live  # noqa: E402
from tests.live_chroma import chroma_server  # noqa: E402

MANY = """
import sys, chromadb, numpy as np
client = chromadb.PersistentClient(path=sys.argv[1])
conf = {"hnsw": {"space": "l2", "sync_threshold": 2, "batch_size": 2}}
for i in range(int(sys.argv[2])):
    c = client.create_collection(f"c{i:05d}", configuration=conf)
    c.add(ids=[f"{i}-{j}" for j in range(4)], embeddings=np.random.rand(4, 8).tolist())
"""


def build(path: Path, collections: int) -> Path:
    subprocess.run([sys.executable, "-c", MANY, str(path), str(collections)], check=True)
    return path


@contextmanager
def idle_processes(n: int) -> Iterator[None]:
    procs = [subprocess.Popen(["sleep", "600"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def timed(path: Path, repeat: int) -> tuple[float, float, int]:
    live.scan(path)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        found = live.scan(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, max(times) * 1000, len(found.processes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        small, many = build(Path(tmp) / "small", 5), build(Path(tmp) / "many", 1000)
        rows = [
            ("5 collections, this machine as it is", small, 0, False),
            ("5 collections, + 500 idle processes", small, 500, False),
            ("5 collections, chroma run holding it", small, 0, True),
            ("1,000 collections, this machine as it is", many, 0, False),
            ("1,000 collections, chroma run holding it, + 500 idle processes", many, 500, True),
        ]
        print(f"processes on this machine: {sum(1 for p in Path('/proc').iterdir() if p.name.isdigit())}")
        print("| persist dir and machine | files | median ms | max ms | holders found |")
        print("|---|---:|---:|---:|---:|")
        for label, path, extra, server in rows:
            with ExitStack() as stack:
                stack.enter_context(idle_processes(extra))
                if server:
                    stack.enter_context(chroma_server(path))
                median, worst, found = timed(path, args.repeat)
            files = len(live.persist_dir_files(path))
            print(f"| {label} | {files:,} | {median:.1f} | {worst:.1f} | {found} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
