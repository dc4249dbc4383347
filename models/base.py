"""The one estimator base of every model kind of every family, with scikit-learn's habits.

`__init__` only stores its parameters as given (so `get_params` reads them back from the
`__init__` signature and `clone` rebuilds an unfitted copy); learned state ends with `_`; using
an unfitted model raises `NotFittedError` naming the class (`check_is_fitted`). A fitted model
saves to a folder as one JSON file (its `kind`, parameters and small state) plus arrays
(`np.savez`, loaded with `allow_pickle=False`) and any native files (LightGBM text); no pickles.
The kind recorded in the folder is looked up in its family's one table of kinds (`load_kind`).
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from shopml.errors import ConfigError, DataError, NotFittedError

FORMAT_VERSION = 1
# kinds recorded by shopml 0.1 under another name, so folders saved then still load
_FORMER_KINDS = {"FraudScorer": "scorer"}


class Estimator:
    """Base of every model: parameters from `__init__`, `_` fitted state, JSON + arrays on disk.

    A subclass declares `kind` (its key in the family's table), `fitted_attribute` (set by fit
    and load), and the files it saves in; it implements `fit` and the persistence hooks
    `_json_state` / `_array_state` / `_save_files` (what to write) and `_restore` (read back).
    """

    kind: ClassVar[str] = ""
    fitted_attribute: ClassVar[str] = ""
    meta_file: ClassVar[str] = "estimator.json"
    arrays_file: ClassVar[str] = "arrays.npz"

    # ---- parameters -------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The parameters of `__init__`, in order (what `get_params` returns)."""
        sig = inspect.signature(cls.__init__)
        return tuple(
            name
            for name, p in sig.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        """The constructor's defaults (parameters without one are left out): job configs read
        these so that every default exists once, here."""
        names = cls.param_names()
        params = inspect.signature(cls.__init__).parameters
        return {n: params[n].default for n in names if params[n].default is not params[n].empty}

    def get_params(self) -> dict[str, Any]:
        """The parameters as given to `__init__`."""
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self, **params: Any) -> Self:
        """Change parameters (not fitted state); ConfigError naming an unknown one."""
        known = self.param_names()
        for name, value in params.items():
            if name not in known:
                raise ConfigError(
                    f"{type(self).__name__} has no parameter {name!r}; "
                    f"its parameters are {', '.join(known)}"
                )
            setattr(self, name, value)
        return self

    def clone(self) -> Self:
        """An unfitted copy with the same parameters (nested estimators cloned too)."""
        return clone(self)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    @property
    def is_fitted(self) -> bool:
        return getattr(self, self.fitted_attribute, None) is not None

    # ---- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the folder: `meta_file` (kind, parameters, small state), arrays, native files."""
        check_is_fitted(self)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = self._array_state()
        if arrays:
            np.savez(path / self.arrays_file, **arrays)
        self._save_files(path)
        meta = {
            "kind": self.kind,
            "format": FORMAT_VERSION,
            "params": self._json_params(),
            **self._json_state(),
        }
        (path / self.meta_file).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Rebuild a model saved by `save` (DataError if the folder holds another kind)."""
        path = Path(path)
        meta = read_meta(path, cls.meta_file)
        if saved_kind(meta) != cls.kind:
            raise DataError(
                f"{path} holds a {saved_kind(meta)!r} model, not a {cls.kind!r} ({cls.__name__})"
            )
        arrays = read_arrays(path / cls.arrays_file)
        model = cls(**cls._init_params(meta["params"], path))
        model._restore(meta, arrays, path)
        return model

    def _json_params(self) -> dict[str, Any]:
        """Parameters as JSON values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.get_params().items()}

    @classmethod
    def _init_params(cls, params: dict[str, Any], path: Path) -> dict[str, Any]:
        """The `__init__` arguments from the saved parameters (composites load parts here)."""
        return dict(params)

    def _json_state(self) -> dict[str, Any]:
        """Small fitted state stored in the JSON file beside the parameters."""
        return {}

    def _array_state(self) -> dict[str, np.ndarray]:
        """Fitted arrays stored in `arrays_file`."""
        return {}

    def _save_files(self, path: Path) -> None:
        """Other files of the folder (LightGBM model text, parts of a composite)."""

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> None:
        """Set the fitted state from what `save` wrote."""
        raise NotImplementedError


def check_is_fitted(estimator: Estimator) -> None:
    """NotFittedError naming the class when `estimator` was neither fitted nor loaded."""
    if getattr(estimator, estimator.fitted_attribute, None) is None:
        name = type(estimator).__name__
        raise NotFittedError(f"{name} is not fitted: call fit() or {name}.load() first")


def clone(estimator: Estimator) -> Estimator:
    """A new unfitted estimator with deep copies of the parameters (estimators are cloned)."""
    params = {k: _clone_param(v) for k, v in estimator.get_params().items()}
    return type(estimator)(**params)


def _clone_param(value: Any) -> Any:
    if isinstance(value, Estimator):
        return clone(value)
    if isinstance(value, list | tuple):
        return type(value)(_clone_param(v) for v in value)
    return copy.deepcopy(value)


def read_meta(path: Path, meta_file: str) -> dict[str, Any]:
    """The JSON file of a saved model folder; DataError when the folder holds none."""
    meta = path / meta_file
    if not meta.is_file():
        raise DataError(f"{path} is not a saved model folder ({meta_file} missing)")
    return json.loads(meta.read_text())


def read_arrays(file: Path) -> dict[str, np.ndarray]:
    """The arrays of a saved model (none when the file is absent); never unpickles."""
    if not file.is_file():
        return {}
    with np.load(file, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def saved_kind(meta: dict[str, Any]) -> str | None:
    """The kind a folder's JSON records (shopml 0.1 recommenders wrote it as `class`)."""
    kind = meta.get("kind", meta.get("class"))
    return _FORMER_KINDS.get(kind, kind)


def make(kinds: Mapping[str, type[Estimator]], kind: str, **params: Any) -> Estimator:
    """A new estimator of `kind` from a family's table; ConfigError naming the known kinds."""
    if kind not in kinds:
        raise ConfigError(f"unknown model kind {kind!r}; choose one of {sorted(kinds)}")
    return kinds[kind](**params)


def load_kind(kinds: Mapping[str, type[Estimator]], path: str | Path, meta_file: str) -> Estimator:
    """Load a saved folder of any kind of a family: its JSON names the kind, `kinds` the class."""
    path = Path(path)
    kind = saved_kind(read_meta(path, meta_file))
    if kind not in kinds:
        raise DataError(
            f"{path / meta_file} names unknown model kind {kind!r}; "
            f"this code knows {', '.join(sorted(kinds))}"
        )
    return kinds[kind].load(path)
