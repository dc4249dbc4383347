"""A LightGBM booster's trees compiled to machine code (lleaves, over LLVM through llvmlite).

The ranker scores a few hundred candidates per session request. LightGBM's own prediction call
builds a predictor and walks its tree structures in every call (~0.3 ms for 300 rows of 43
trees on a quiet machine); the same trees compiled into one function, with each tree's
thresholds as constants in its branches, take ~0.02 ms. lleaves parses the booster's model
text, so there is no second definition of the trees to keep in step.

Same scores to the last bit: inputs are promoted to float64 as LightGBM does, each row's trees
are summed in LightGBM's order (one block of all trees, `fblocksize` = the number of trees:
lleaves' default blocks of 34 trees add the blocks' sums in another order, a few 1e-16 away),
and the raw score is returned (the ranker's `lambdarank` has no output transform).

The compiled object is machine code for the CPU that compiled it. It is kept with the model
(`save`: its bytes beside the booster, and a key naming the booster text's SHA-256, the
lleaves / llvmlite versions and the CPU's name and features) and reused at load only when
that key is this process's own, else the trees are compiled again (about a second); an object
is never loaded from anywhere but the model's own folder.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import tempfile
import threading
from importlib import metadata
from pathlib import Path

import numpy as np

OBJECT_FILE = "ranker_trees.o"
KEY_FILE = "ranker_trees.json"
# LLVM's small code model (32-bit offsets: ~10% faster on a session's rows, the same
# arithmetic) for forests whose model text is below this size; lleaves' default, the large
# one, past it (the small model cannot address a forest's code past 2 GB)
SMALL_CODE_MODEL_TEXT = 64 * 2**20
CHUNK_ROWS = 8192  # rows promoted to float64 per call: 2 MB at 31 features
_ENTRY = "forest_root"
# void forest_root(double *rows, double *out, int32 start, int32 end): releases the GIL
_SIGNATURE = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32
)
_LOCK = threading.Lock()  # LLVM's one-time initialisation and compilation, one at a time


class CompiledForest:
    """`predict(X)`: the raw scores of a LightGBM model text's trees, compiled (see module)."""

    def __init__(self, model_text: str, cached: bytes | None = None) -> None:
        import lleaves  # a serving-side dependency, imported where the trees are compiled

        self.model_text = model_text
        self.key = forest_key(model_text)
        with _LOCK, tempfile.TemporaryDirectory(prefix="shopml-trees-") as tmp:
            text_path = Path(tmp) / "model.txt"
            text_path.write_text(model_text)
            obj_path = Path(tmp) / OBJECT_FILE
            if cached is not None:
                obj_path.write_bytes(cached)  # lleaves loads a cache file as it is
            model = lleaves.Model(str(text_path))
            self.n_features = model.num_feature()
            model.compile(
                cache=str(obj_path),
                raw_score=True,
                fblocksize=max(model.num_trees(), 1),
                fcodemodel=code_model(model_text),
            )
            self.object_bytes = obj_path.read_bytes()
        self._model = model  # keeps the execution engine (and the function's code) alive
        address = model._execution_engine.get_function_address(_ENTRY)
        self._entry = _SIGNATURE(address)

    def __reduce__(self):
        """Pickled as the model text and object (a process on another CPU compiles anew)."""
        return _unpickle, (self.model_text, self.key, self.object_bytes)

    @classmethod
    def of_booster(cls, booster) -> CompiledForest:
        """The booster's trees (those `Booster.predict` uses by default) compiled."""
        return cls(booster.model_to_string())

    @classmethod
    def load(cls, folder: Path, model_text: str) -> CompiledForest:
        """The trees of `model_text`, from the object kept in `folder` when its key is this
        process's (same booster text, compiler versions and CPU), else compiled anew."""
        folder = Path(folder)
        cached = None
        try:
            kept = json.loads((folder / KEY_FILE).read_text())
            if kept == forest_key(model_text):
                cached = (folder / OBJECT_FILE).read_bytes()
        except (OSError, ValueError):
            cached = None  # none kept, or unreadable: compile
        return cls(model_text, cached)

    def save(self, folder: Path) -> None:
        """Keep the compiled object and its key beside the model."""
        folder = Path(folder)
        (folder / OBJECT_FILE).write_bytes(self.object_bytes)
        (folder / KEY_FILE).write_text(json.dumps(self.key, sort_keys=True))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n,) float64 raw scores of the rows of `X` (n, n_features), any float dtype; a
        batch's rows are promoted to float64 `CHUNK_ROWS` at a time (a bounded copy)."""
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"the trees take {self.n_features} features, got shape {X.shape}")
        n = X.shape[0]
        out = np.empty(n, np.float64)
        for lo in range(0, n, CHUNK_ROWS):
            rows = np.ascontiguousarray(X[lo : lo + CHUNK_ROWS], dtype=np.float64)
            self._entry(rows.ctypes.data, out[lo:].ctypes.data, 0, rows.shape[0])
        return out


def _unpickle(model_text: str, key: dict, object_bytes: bytes) -> CompiledForest:
    return CompiledForest(model_text, object_bytes if key == forest_key(model_text) else None)


def code_model(model_text: str) -> str:
    """LLVM's code model for these trees (see SMALL_CODE_MODEL_TEXT)."""
    return "small" if len(model_text) < SMALL_CODE_MODEL_TEXT else "large"


def forest_key(model_text: str) -> dict[str, str]:
    """What a compiled object is valid for: the trees, the compiler and the CPU."""
    import llvmlite.binding as llvm

    with _LOCK:
        llvm.initialize()
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        try:
            features = llvm.get_host_cpu_features().flatten()
        except RuntimeError:  # LLVM cannot tell on this host: lleaves compiles for none
            features = ""
        return {
            "model_sha256": hashlib.sha256(model_text.encode()).hexdigest(),
            "lleaves": metadata.version("lleaves"),
            "llvmlite": metadata.version("llvmlite"),
            "triple": llvm.get_process_triple(),
            "cpu": llvm.get_host_cpu_name(),
            "cpu_features": features,
            "code_model": code_model(model_text),
        }
