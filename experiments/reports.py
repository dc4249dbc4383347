"""Where every benchmark writes its JSON report: one writer, so `--out` behaves the same in all."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(report: dict, out: str | Path | None) -> None:
    """Write the report as JSON to `out`, creating its folder (nothing when `out` is None)."""
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))
