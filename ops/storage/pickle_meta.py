"""index_metadata.pickle, read with an unpickler that can build nothing but plain data.

Two forms exist: Python Chroma (0.5/0.6) pickles a
`chromadb.segment.impl.vector.local_persistent_hnsw.PersistentData` object (protocol 5); Rust
Chroma (1.x) pickles a plain dict (protocol 3) with the same keys. A pickle is code, so the only
global this unpickler resolves is that one class name, mapped to an inert stand-in of ours; any
other global (os.system, builtins.eval, ...) is refused before anything runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from ops.errors import CorruptHnswFile, UnsafePickle
from ops.storage.hnsw_files import unreadable

PERSISTENT_DATA_MODULE = "chromadb.segment.impl.vector.local_persistent_hnsw"
PERSISTENT_DATA_CLASS = "PersistentData"


class _PersistentDataStandIn:
    """Receives the state of a pickled PersistentData; has no behaviour."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == (PERSISTENT_DATA_MODULE, PERSISTENT_DATA_CLASS):
            return _PersistentDataStandIn
        raise UnsafePickle(
            f"index_metadata.pickle refers to {module}.{name}, which is not plain index metadata; nothing was executed",
            "do not load this folder with Chroma; delete the pickle and rebuild the index from a backup",
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("index_metadata.pickle uses persistent ids; nothing was executed")


CutShort = Literal["map whole", "map cut"]


class HnswPickleMeta(BaseModel):
    """The content of index_metadata.pickle, whatever its form."""

    form: Literal["object", "dict"]
    dimensionality: int | None = None
    total_elements_added: int
    max_seq_id: int | None = None
    id_to_label: dict[str, int]
    label_to_id: dict[int, str]
    id_to_seq_id: dict[str, int] = {}
    cut_short: CutShort | None = None
    """Read from a pickle cut short while Chroma rewrote it (`salvage_cut_short`): id_to_label whole,
    or the pairs of it written before the cut; label_to_id is its inverse. chromadb cannot load the
    file itself."""
    inferred: str | None = None
    """The file could not be read at all (a SIGKILL while Chroma rewrote it leaves it empty): how the
    maps were inferred instead (ops.storage.label_order). chromadb cannot load the file itself."""


PICKLE_HINT = (
    "restore the folder from a backup, or see chops doctor on the persist dir: its --plan builds the index "
    "anew from the WAL rows that still hold its vectors"
)


def parse_pickle(data: bytes, where: Path) -> HnswPickleMeta:
    try:
        # BufferedReader: the C unpickler reads ahead from a stream that has peek(); without it,
        # it calls read() once per opcode (2-3x slower on a 50,000-element pickle).
        obj = _RestrictedUnpickler(io.BufferedReader(io.BytesIO(data))).load()
    except UnsafePickle as exc:
        raise UnsafePickle(f"{where}: {exc.message}", exc.hint) from None
    except Exception as exc:  # any unpickling failure of untrusted bytes is "corrupt"
        raise CorruptHnswFile(
            f"{where} is not a readable index metadata pickle ({type(exc).__name__})",
            PICKLE_HINT,
        ) from None
    form: Literal["object", "dict"]
    if isinstance(obj, _PersistentDataStandIn):
        form, state = "object", getattr(obj, "state", None)
    else:
        form, state = "dict", obj
    if not isinstance(state, dict):
        raise CorruptHnswFile(
            f"{where} does not hold index metadata (found {type(state).__name__})",
            PICKLE_HINT,
        )
    try:
        return _validated(state, form)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"][:1])
        raise CorruptHnswFile(
            f"{where} has unexpected index metadata ({field}: {first['msg']})",
            PICKLE_HINT,
        ) from None


_MAPPINGS: dict[str, tuple[type, type]] = {
    "id_to_label": (str, int),
    "label_to_id": (int, str),
    "id_to_seq_id": (str, int),
}


def _validated(state: dict[str, Any], form: Literal["object", "dict"]) -> HnswPickleMeta:
    """The model of the state. The three maps (a million entries each at 1M vectors) are checked
    by exact key and value types, a pass over each, instead of entry by entry through pydantic
    (3x slower measured at 800,000 labels); maps of other types go through pydantic's checks and messages."""
    typed = {f: state[f] for f, (kt, vt) in _MAPPINGS.items() if f in state and _typed(state[f], kt, vt)}
    meta = HnswPickleMeta.model_validate({**state, **{f: {} for f in typed}, "form": form})
    return meta.model_copy(update=typed)


def _typed(mapping: Any, key_type: type, value_type: type) -> bool:
    if type(mapping) is not dict:
        return False
    return set(map(type, mapping)) <= {key_type} and set(map(type, mapping.values())) <= {value_type}


def read_pickle(path: Path) -> HnswPickleMeta:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise unreadable(path, exc) from exc
    return parse_pickle(data, path)


def dump_pickle(meta: HnswPickleMeta) -> bytes:
    """index_metadata.pickle in the form its layout reads.

    dict form (1.x): a plain dict, protocol 3. object form (0.5/0.6): a PersistentData instance,
    written as GLOBAL + NEWOBJ + BUILD around the state dict, so that chromadb is not needed to
    write it (pickling a real instance would need the class importable here).
    """
    state: dict[str, object] = {
        "dimensionality": meta.dimensionality,
        "total_elements_added": meta.total_elements_added,
        "id_to_label": meta.id_to_label,
        "label_to_id": meta.label_to_id,
        "id_to_seq_id": meta.id_to_seq_id,
    }
    if meta.form == "dict":
        state["max_seq_id"] = meta.max_seq_id
        return pickle.dumps(state, protocol=3)
    if meta.max_seq_id is not None:
        state["max_seq_id"] = meta.max_seq_id
    body = pickle.dumps(state, protocol=2)
    assert body[:2] == b"\x80\x02" and body[-1:] == pickle.STOP
    klass = f"{PERSISTENT_DATA_MODULE}\n{PERSISTENT_DATA_CLASS}\n".encode()
    return (
        b"\x80\x02"
        + pickle.GLOBAL
        + klass
        + pickle.EMPTY_TUPLE
        + pickle.NEWOBJ
        + body[2:-1]
        + pickle.BUILD
        + pickle.STOP
    )


_WHOLE_MAP = "id_to_label"
_SCALARS = {"dimensionality", "total_elements_added", "max_seq_id"}


def salvage_cut_short(data: bytes) -> HnswPickleMeta | None:
    """The metadata a 1.x (dict form) pickle cut short while Chroma rewrote it still holds, or None.

    Chroma truncates index_metadata.pickle and writes it anew; a write cut short leaves a prefix of
    whole 4 KB pages (chromadb 1.5.9 on a disk that filled meanwhile, measured; a power loss before
    all its pages reached the disk): the counters, then id_to_label (in batches of 1,000 pairs), then
    label_to_id, its inverse. When the prefix goes past the end of id_to_label (the next key has begun), the map is
    whole ("map whole") and the rest follows from it exactly; when the cut is inside it, the pairs
    written before the cut are exact and the others unknown ("map cut"). The prefix is read op by
    op (pickletools), only strings, integers, None, dicts and their items: nothing is built or
    called. Anything else (the object form of 0.5/0.6, a cut before id_to_label) is None."""
    import pickletools

    stack: list[Any] = []
    marks: list[int] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in ("PROTO", "FRAME", "MEMOIZE", "BINPUT", "LONG_BINPUT"):
                continue
            if name in ("BINUNICODE", "SHORT_BINUNICODE", "BININT", "BININT1", "BININT2", "LONG1"):
                stack.append(arg)
            elif name == "NONE":
                stack.append(None)
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "MARK":
                marks.append(len(stack))
            elif name == "SETITEMS":
                items = stack[marks.pop() :]
                del stack[len(stack) - len(items) :]
                stack[-1].update(zip(items[::2], items[1::2], strict=True))
            else:  # STOP (the pickle is whole: not this function's case) or an op Chroma's 1.x pickle never has
                return None
    except (ValueError, TypeError, IndexError, AttributeError):
        pass  # the cut: what was read so far
    return _prefix_meta(stack, marks)


def _prefix_meta(stack: list[Any], marks: list[int]) -> HnswPickleMeta | None:
    """From the stack of a cut dict-form pickle: [outer dict, (MARK) key, value, ..., key, value
    (, MARK, the cut map's pending pairs)], or the outer dict alone, filled, when only STOP was cut."""
    if not stack or not isinstance(stack[0], dict) or (marks and marks[0] != 1) or (not marks and len(stack) != 1):
        return None
    pending = stack[1 : marks[1]] if len(marks) > 1 else stack[1:]
    keys = [*stack[0], *pending[::2]]
    state = {**stack[0], **dict(zip(pending[::2], pending[1::2], strict=False))}
    if _WHOLE_MAP not in keys or not state.keys() >= _SCALARS or not isinstance(state[_WHOLE_MAP], dict):
        return None
    id_to_label = dict(state[_WHOLE_MAP])
    mode: CutShort = "map whole" if keys.index(_WHOLE_MAP) < len(keys) - 1 else "map cut"
    if mode == "map cut" and len(marks) > 1:  # the pairs of the batch the cut is in
        batch = stack[marks[1] :]
        id_to_label.update(zip(batch[::2], batch[1::2], strict=False))
    if not id_to_label or not _typed(id_to_label, str, int) or len(set(id_to_label.values())) != len(id_to_label):
        return None
    salvaged = {f: state[f] for f in _SCALARS} | {
        _WHOLE_MAP: id_to_label,
        "label_to_id": {label: ident for ident, label in id_to_label.items()},
        "id_to_seq_id": {},
    }
    try:
        return _validated(salvaged, "dict").model_copy(update={"cut_short": mode})
    except ValidationError:
        return None
