"""MLflow's generic interface over a shopml native model folder.

Only for generic consumers (mlflow.pyfunc.load_model, batch scoring tools): serving loads the
native folder directly. `predict` takes a DataFrame and calls the model's `predict_frame`.
"""

from __future__ import annotations

import importlib
import warnings

import mlflow.pyfunc

# the wrapper takes and returns DataFrames whose columns depend on the family: no type hints
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")


class NativeModel(mlflow.pyfunc.PythonModel):
    def __init__(self, loader: str):
        self.loader = loader
        self.model = None

    def load_context(self, context) -> None:
        module_name, _, attr_path = self.loader.partition(":")
        obj = importlib.import_module(module_name)
        for part in attr_path.split("."):
            obj = getattr(obj, part)
        self.model = obj(context.artifacts["native"])

    def predict(self, context, model_input, params=None):
        if not hasattr(self.model, "predict_frame"):
            raise TypeError(f"{type(self.model).__name__} offers no predict_frame(DataFrame)")
        return self.model.predict_frame(model_input)
