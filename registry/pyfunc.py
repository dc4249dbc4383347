"""MLflow's generic interface over a shopml native model folder, with its signature and example.

Only for generic consumers (mlflow.pyfunc.load_model, batch scoring tools): serving loads the
native folder directly. The wrapper keeps the model's family and kind (never an import string),
loads through the family's table of kinds and answers one DataFrame per family:

- fraud: payments (transaction_id, timestamp, customer_id, card_id, terminal_id, amount,
  currency) -> probability, risk_score, decision, decided_by, reasons (JSON), ...;
- recommender: customer_id (and optional k) -> one row per customer with its product_ids;
- forecast: product_id (and optional horizon) -> product_id, date, p10, p50, p90.
"""

from __future__ import annotations

import json
import warnings

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from models.family import NATIVE_ARTIFACT
from registry.metadata import FAMILY_KEY, OLD_LOADER_KEY, load_model

DEFAULT_K = 10
DEFAULT_HORIZON = 7


# The wrapper takes and returns DataFrames whose columns depend on the family: no type hints.
# MLflow warns about that once, when this class is defined (under its own "once" filter, which
# no filter of ours overrides); it is imported only to log or load a pyfunc model.
class NativeModel(mlflow.pyfunc.PythonModel):
    def __init__(self, metadata: dict[str, str]):
        self.metadata = dict(metadata)  # shopml.family and shopml.kind
        self.model = None

    def load_context(self, context) -> None:
        # a wrapper pickled by an older shopml holds only `loader`, an import string
        metadata = getattr(self, "metadata", None) or {OLD_LOADER_KEY: getattr(self, "loader", "")}
        self.model = load_model(metadata, context.artifacts[NATIVE_ARTIFACT], "the pyfunc model")

    def predict(self, context, model_input, params=None):
        return predict_frame(self.metadata.get(FAMILY_KEY), self.model, pd.DataFrame(model_input))


def predict_frame(family_name: str | None, model, frame: pd.DataFrame) -> pd.DataFrame:
    """The family's DataFrame answer of `model` to `frame` (see the module docstring)."""
    if family_name == "recommender":
        return _recommend(model, frame)
    if family_name == "forecast":
        return _forecast(model, frame)
    if not hasattr(model, "predict_frame"):
        raise TypeError(f"{type(model).__name__} offers no predict_frame(DataFrame)")
    out = model.predict_frame(frame)
    if "reasons" in out:  # a list of dicts per row: one JSON text, a column a signature can type
        out["reasons"] = [json.dumps(r) for r in out["reasons"]]
    if "degraded_reason" in out:
        out["degraded_reason"] = out["degraded_reason"].fillna("").astype(str)
    return out


def _recommend(model, frame: pd.DataFrame) -> pd.DataFrame:
    k = int(frame["k"].iloc[0]) if "k" in frame and len(frame) else DEFAULT_K
    customers = [str(c) for c in frame["customer_id"]]
    lists = model.recommend(customers, k=k)
    return pd.DataFrame(
        {
            "customer_id": customers,
            "product_ids": [[str(p) for p in r.product_ids] for r in lists],
            "scores": [[float(s) for s in r.scores] for r in lists],
            "source": [r.source for r in lists],
        }
    )


def _forecast(model, frame: pd.DataFrame) -> pd.DataFrame:
    horizon = int(frame["horizon"].iloc[0]) if "horizon" in frame and len(frame) else None
    horizon = horizon or int(getattr(model, "horizon", None) or DEFAULT_HORIZON)
    out = model.predict(horizon, [str(p) for p in frame["product_id"]])
    out = out[["product_id", "date", "p10", "p50", "p90"]].copy()
    out["product_id"] = out["product_id"].astype(str)
    out["date"] = pd.to_datetime(out["date"]).dt.strftime("%Y-%m-%d")
    return out


def input_example(family_name: str, model) -> pd.DataFrame:
    """A request the model answers, built from what it knows (for the signature and example)."""
    if family_name == "recommender":
        known = getattr(model, "customer_ids_", None)
        customer = str(known[0]) if known is not None and len(known) else "example-customer"
        return pd.DataFrame({"customer_id": [customer], "k": [DEFAULT_K]})
    if family_name == "forecast":
        products = [str(p) for p in model.panel_.product_ids[:2]]
        return pd.DataFrame({"product_id": products, "horizon": [DEFAULT_HORIZON] * len(products)})
    return pd.DataFrame(
        {
            "transaction_id": ["example-1"],
            "timestamp": ["2024-01-15T12:00:00"],
            "customer_id": ["example-customer"],
            "card_id": ["example-card"],
            "terminal_id": ["example-terminal"],
            "amount": [42.5],
            "currency": ["EUR"],
        }
    )


def signature_and_example(family_name: str, metadata: dict[str, str], native_dir):
    """The signature inferred from the family's example and the model's own answer to it."""
    model = load_model(metadata, native_dir, "the model being logged")
    example = input_example(family_name, model)
    answer = predict_frame(family_name, model, example.copy())
    # MLflow hints that integer columns cannot hold missing values: `k`, `horizon` and
    # `risk_score` never miss one, so the hint would only clutter every training run
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        return infer_signature(example, _plain(answer)), example


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """numpy scalars inside list cells as Python values (signature inference types them)."""
    return frame.apply(lambda c: c.map(_listify) if c.dtype == object else c)


def _listify(value):
    return value.tolist() if isinstance(value, np.ndarray) else value
