"""The persist dir as data. Read-only here; imports nothing of ours above it.

Entry point: `PersistDir.open(path)`.
"""

from ops.storage.persist_dir import PersistDir

__all__ = ["PersistDir"]
