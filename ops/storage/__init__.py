"""The persist dir as data: reading it (layout, sysdb, WAL, HNSW files, FTS) and the writes that
change it, next to the reads of the same thing. Imports nothing of ours above it (never ops.engine,
ops.steps or ops.cli). Reading: `PersistDir.open(path)`, a read-only view.

Modules that write say so: config_write (HNSW parameters), wal (the purge setting), wal_purge
(deletes WAL rows), wal_apply (commits WAL rows to an index, max_seq_id), fts (rebuilds the FTS
table), collection_rows (a collection's rows), collection_file (snapshot files, their extraction),
hnsw_index (new indexes), index_swap (puts a new segment folder in place), fs (durable file writes).
SQL writes run inside the caller's transaction (the runner's write lock).
"""

from ops.storage.persist_dir import PersistDir

__all__ = ["PersistDir"]
