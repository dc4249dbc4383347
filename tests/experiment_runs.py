"""Helpers for the experiment tests: log runs the way the training jobs do, run the CLI in-process."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

# what a job records of its test (`training.tracking.log_protocol`): the runs of these tests
# share it unless a test passes another (or None: a run logged before protocols existed)
PROTOCOL = {"split": {"kind": "time", "test_days": 14}, "k": 100}


def tiny_store(variant: int = 0):
    """A two-product store; a different `variant` gives different data (another fingerprint)."""
    from features.store import Store

    products = pd.DataFrame(
        {"product_id": ["p1", "p2"], "category": ["a", "b"], "price": [1.0, 2.0 + variant]}
    )
    return Store(products=products, name=f"tiny{variant}").validated()


def log_run(
    family: str,
    metrics: dict[str, float],
    *,
    data: int = 0,
    name: str | None = None,
    curves: dict[str, tuple[list[float], list[float]]] | None = None,
    config: dict | None = None,
    register: bool = True,
    native_model: bool = False,
    protocol: dict | None = PROTOCOL,
) -> str:
    """A run the way the jobs log one: config, data fingerprint, metrics, curves and a model.

    By default the model is a tiny artifact registered directly (a handful of requests, like
    `training.tracking.register_model` does it: tags run_id and data.fingerprint, first version
    becomes champion); `native_model=True` logs it with the real `log_native_model` (slower).
    """
    import mlflow

    from training.tracking import (
        log_curve,
        log_native_model,
        log_protocol,
        register_model,
        start_run,
    )

    store = tiny_store(data)
    config = config or {"seed": 0, "variant": name or "run"}
    with start_run(family, config=config, store=store, run_name=name) as run:
        mlflow.log_metrics(metrics)
        if protocol is not None:
            log_protocol(protocol)
        for curve, (x, y) in (curves or {}).items():
            log_curve(curve, x, y)
        if native_model:
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "weights.json").write_text(json.dumps(metrics))
                uri = log_native_model(tmp, family=family)
            if register:
                register_model(uri, family=family)
        else:
            mlflow.log_dict(metrics, "model/weights.json")
            if register:
                _register_tiny(family, run.info.run_id, store.fingerprint_id())
        return run.info.run_id


def _register_tiny(family: str, run_id: str, fingerprint: str) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    name = f"shopml-{family}"
    with contextlib.suppress(MlflowException):  # exists already
        client.create_registered_model(name)
    mv = client.create_model_version(
        name,
        source=f"runs:/{run_id}/model",
        run_id=run_id,
        tags={"run_id": run_id, "data.fingerprint": fingerprint},
    )
    try:
        client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        client.set_registered_model_alias(name, "champion", mv.version)
    client.set_tag(run_id, "shopml.model_version", mv.version)
    return str(mv.version)


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    """Run `shopml ARGS` in-process the way the console script does; returns (exit code, output)."""
    from cli.main import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["shopml", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out + captured.err
