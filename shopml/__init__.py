"""shopml: personalization, fraud scoring and demand forecasting for online stores.

This package holds what every layer shares and nothing heavy: named errors, settings,
structured logging and the command line. It never imports mlflow or bentoml at import time.
"""

__version__ = "0.1.0"
