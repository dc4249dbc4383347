"""The `shopml` command line and the main job: the top layer, which may import every other one.

Commands stay thin: parse options, call a job, print the outcome. `cli.main` holds the Typer
app; each module adds the commands of one area. Importing `cli` sets the environment defaults
the jobs expect before any numerical library is loaded.

Imports stay inside a command only when they are heavy: `# on use: <cost>` says what each would
add to every `shopml --help` (0.14 s without them), measured with `python -X importtime`.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# MLflow sets its own log level on import and draws progress bars; keep the jobs' output readable
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
