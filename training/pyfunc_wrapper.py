"""MLflow's generic interface over a shopml native model folder.

Only for generic consumers (mlflow.pyfunc.load_model, batch scoring tools): serving loads the
native folder directly. The wrapper keeps the model's family and kind (never an import string)
and loads through the family's table of kinds; `predict` calls the model's `predict_frame`.
"""

from __future__ import annotations

import mlflow.pyfunc

from models.family import NATIVE_ARTIFACT
from registry.metadata import OLD_LOADER_KEY, load_model


# The wrapper takes and returns DataFrames whose columns depend on the family: no type hints.
# MLflow warns about that once, when this class is defined (under its own "once" filter, which
# no filter of ours overrides); training.tracking imports this module only to log a model.
class NativeModel(mlflow.pyfunc.PythonModel):
    def __init__(self, metadata: dict[str, str]):
        self.metadata = dict(metadata)  # shopml.family and shopml.kind
        self.model = None

    def load_context(self, context) -> None:
        # a wrapper pickled by an older shopml holds only `loader`, an import string
        metadata = getattr(self, "metadata", None) or {OLD_LOADER_KEY: getattr(self, "loader", "")}
        self.model = load_model(metadata, context.artifacts[NATIVE_ARTIFACT], "the pyfunc model")

    def predict(self, context, model_input, params=None):
        if not hasattr(self.model, "predict_frame"):
            raise TypeError(f"{type(self.model).__name__} offers no predict_frame(DataFrame)")
        return self.model.predict_frame(model_input)
