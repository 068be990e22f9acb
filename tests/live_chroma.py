"""Real running Chromas for the live-process tests: a `chroma run` server and a PersistentClient
process, each on 127.0.0.1 / a persist dir, each stopping by itself after a time limit."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LIFETIME_S = 300  # a server or holder left behind by a crashed test stops by itself


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    path: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import chromadb

        return chromadb.HttpClient(host="127.0.0.1", port=self.port)

    @property
    def pid(self) -> int:
        """The chroma process itself (the child of `timeout`)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        return int(out[0]) if out else self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def chroma_server(path: Path, query: str | None = None) -> Iterator[Server]:
    """`chroma run --path DIR` on 127.0.0.1; with `query`, that collection's index is loaded."""
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = free_port()
    proc = subprocess.Popen(
        ["timeout", str(LIFETIME_S), chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server(path, port, proc)
    try:
        _wait_for_heartbeat(server)
        if query:
            collection = server.client().get_collection(query)
            dim = len(collection.get(limit=1, include=["embeddings"])["embeddings"][0])
            collection.query(query_embeddings=[[0.5] * dim], n_results=1)
        yield server
    finally:
        server.stop()


def _wait_for_heartbeat(server: Server) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            server.client().heartbeat()
            return
        except Exception:
            if server.proc.poll() is not None:
                raise RuntimeError("chroma run exited") from None
            time.sleep(0.2)
    raise RuntimeError("chroma run did not answer within 60 s")


HOLDER = textwrap.dedent(
    """
    import select, sys, chromadb
    collection = chromadb.PersistentClient(path=sys.argv[1]).get_collection(sys.argv[2])
    dim = len(collection.get(limit=1, include=["embeddings"])["embeddings"][0])
    collection.query(query_embeddings=[[0.5] * dim], n_results=1)
    print("ready", flush=True)
    select.select([sys.stdin], [], [], float(sys.argv[3]))  # until stdin closes, or the time limit
    """
)


@contextmanager
def persistent_client(path: Path, collection: str) -> Iterator[subprocess.Popen[str]]:
    """An idle application process whose PersistentClient has queried a collection."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), collection, str(LIFETIME_S)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Writer:
    """A client adding through the live server in a thread: batches of `batch` vectors with documents,
    each recorded once the server acknowledged it."""

    server: Server
    collection: str
    dim: int
    batch: int = 20
    acknowledged: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def add_batch(self, collection: Any, round_: int) -> None:
        ids = [f"live-{round_}-{i}" for i in range(self.batch)]
        vectors = np.random.RandomState(round_).rand(self.batch, self.dim).astype(np.float32).tolist()
        collection.add(ids=ids, embeddings=vectors, documents=[f"written live as {i}" for i in ids])  # (FTS rows too)
        self.acknowledged.update(zip(ids, vectors, strict=True))

    def _run(self) -> None:
        collection = self.server.client().get_collection(self.collection)
        round_ = 1000
        while not self._stop.is_set():
            try:
                self.add_batch(collection, round_)
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            round_ += 1
            time.sleep(0.05)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
