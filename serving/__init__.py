"""The BentoML services (storefront and checkout) and what builds and runs them.

In a `bentoml serve` process (`SHOPML_SERVING_PROCESS=1`, set by `serving.runner`) this runs
before any service module: LightGBM imports scikit-learn for its optional estimator API, which
serving never uses; hiding it saves ~0.4 s of each process's cold start (lightgbm imports in
0.37 s instead of 0.79 s), and it must happen before anything imports LightGBM.
"""

import os
import sys

if os.environ.get("SHOPML_SERVING_PROCESS") == "1" and "sklearn" not in sys.modules:
    sys.modules["sklearn"] = None  # type: ignore[assignment]
