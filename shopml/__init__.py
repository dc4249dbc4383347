"""shopml: personalization, fraud scoring and demand forecasting for online stores.

This package is the ground layer every other one imports: named errors, settings, typed
configs, structured logging and time conversion. It imports no other shopml layer and never
mlflow or bentoml. The command line lives in the top-level `cli` package.
"""

__version__ = "0.1.0"
