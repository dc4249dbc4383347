"""The forecaster interface shared by every demand model, and helpers they all use.

`fit(panel)` learns from a `DemandPanel` (or its long table); `predict(horizon)` forecasts the next
`horizon` calendar days after the panel end for every product (or `product_ids`) and returns one row
per product and day: product_id, date, p10, p50, p90, flag. `flag` is "model" for a normal forecast,
"short_history" when a product had too little history and got the fallback baseline, and "closed"
for a day the shop is closed (all quantiles 0). `save(dir)`/`load(dir)` use JSON + npz (+ LightGBM
text), never pickles.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from features.demand import DemandPanel
from features.known_future import KnownFuture
from models.base import Estimator, check_is_fitted
from models.forecast.calibration import BAND, band_quantile
from shopml.errors import ConfigError, DataError

OUTPUT_COLUMNS = ("product_id", "date", "p10", "p50", "p90", "flag")
FLAG_MODEL, FLAG_SHORT, FLAG_CLOSED = "model", "short_history", "closed"
KNOWN_TABLES = ("promotions", "prices", "closures")


def as_panel(data) -> DemandPanel:
    """Accept a DemandPanel or a long table (validated: duplicates raise DataError)."""
    if isinstance(data, DemandPanel):
        return data
    if isinstance(data, pd.DataFrame):
        return DemandPanel.from_frame(data)
    raise DataError(f"expected a DemandPanel or DataFrame, got {type(data).__name__}")


def check_horizon(horizon, max_horizon: int | None = None) -> int:
    """`horizon` as an int; ConfigError unless it is a positive integer within `max_horizon`."""
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer):
        raise ConfigError(f"horizon must be a positive integer, got {horizon!r}")
    if horizon <= 0:
        raise ConfigError(f"horizon must be a positive integer, got {horizon}")
    if max_horizon is not None and horizon > max_horizon:
        raise ConfigError(
            f"horizon {horizon} is longer than the {max_horizon} days the model was trained for"
        )
    return int(horizon)


def save_panel(panel: DemandPanel, path: Path) -> None:
    """Write the panel a forecaster predicts from: `panel.npz` (compressed) and `panel.json`."""
    np.savez_compressed(
        path / "panel.npz",
        product_ids=np.array([str(p) for p in panel.product_ids], dtype=str),
        categories=np.array([str(c) for c in panel.categories], dtype=str),
        dates=panel.dates.values.astype("datetime64[D]").astype(np.int64),
        units=panel.units,
        price=panel.price,
        open_days=panel.open_days,
        closed=panel.closed,
        series_closed_weekdays=panel.series_closed_weekdays,
        **({} if panel.orders is None else {"orders": panel.orders}),
        **({} if panel.locations is None else {"locations": panel.locations.astype(str)}),
    )
    meta = {
        "closed_weekdays": list(panel.closed_weekdays),
        "country": panel.country,
        "has_locations": panel.locations is not None,
        "known_lead_days": None if panel.known is None else panel.known.lead_days,
    }
    (path / "panel.json").write_text(json.dumps(meta))
    if panel.known is not None:  # the plans the forecast reads (Parquet: no pickles)
        for name in KNOWN_TABLES:
            getattr(panel.known, name).to_parquet(path / f"known_{name}.parquet", index=False)


def load_panel(path: Path) -> DemandPanel:
    """Read what `save_panel` wrote (never unpickles)."""
    with np.load(path / "panel.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads((path / "panel.json").read_text())
    dates = pd.DatetimeIndex(arrays["dates"].astype("datetime64[D]").astype("datetime64[ns]"))
    return DemandPanel(
        arrays["product_ids"].astype(object),
        arrays["categories"].astype(object),
        dates,
        arrays["units"],
        arrays["price"],
        arrays["open_days"],
        tuple(meta["closed_weekdays"]),
        meta["country"],
        arrays.get("orders"),
        arrays["locations"].astype(object) if meta.get("has_locations") else None,
        arrays.get("closed"),
        arrays.get("series_closed_weekdays"),
        _load_known(path, meta.get("known_lead_days")),
    )


def _load_known(path: Path, lead_days: int | None) -> KnownFuture | None:
    """The saved plans (`save_panel`), None when the panel had none."""
    if lead_days is None:
        return None
    tables = {n: pd.read_parquet(path / f"known_{n}.parquet") for n in KNOWN_TABLES}
    return KnownFuture(**tables, lead_days=lead_days)


def recent_mean(panel: DemandPanel, window: int) -> np.ndarray:
    """Mean units of each product's observed days among the panel's last `window` (0 if none):
    the moving-average forecast, and what the LightGBM forecast is blended with."""
    seg = panel.units[:, -window:]
    seen = ~np.isnan(seg)
    n = seen.sum(axis=1)
    return np.where(n > 0, np.where(seen, seg, 0.0).sum(axis=1) / np.maximum(n, 1), 0.0)


def empirical_band(panel: DemandPanel, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`recent_mean` and the 10% / 90% `calibration.band_quantile`s (P90 above 0 for a window of
    mostly zero days with some sales) of each product's observed days in the last `window` days."""
    seg = panel.units[:, -window:]
    q10, q90 = np.zeros((2, len(seg)))
    for i, row in enumerate(seg):
        days = row[~np.isnan(row)]
        if len(days):
            q10[i], q90[i] = band_quantile(days, BAND)
    return recent_mean(panel, window), q10, q90


def assemble(
    panel: DemandPanel,
    rows: np.ndarray,
    horizon: int,
    p10: np.ndarray,
    p50: np.ndarray,
    p90: np.ndarray,
    flags: np.ndarray,
) -> pd.DataFrame:
    """Output table from [len(rows), horizon] arrays; closed days get zeros and flag 'closed'."""
    dates, open_ = panel.future_dates(horizon)
    n = len(rows)
    lo = np.clip(np.minimum(p10, p50), 0.0, None)
    mid = np.clip(p50, 0.0, None)
    hi = np.maximum(np.clip(p90, 0.0, None), mid)
    lo = np.minimum(lo, mid)
    flag = np.broadcast_to(np.asarray(flags, dtype=object)[:, None], (n, horizon)).copy()
    closed = future_closed(panel, rows, horizon, open_)
    lo[closed] = mid[closed] = hi[closed] = 0.0
    flag[closed] = FLAG_CLOSED
    return pd.DataFrame(
        {
            "product_id": np.repeat(panel.product_ids[rows], horizon),
            "date": np.tile(dates.values, n),
            "p10": lo.ravel(),
            "p50": mid.ravel(),
            "p90": hi.ravel(),
            "flag": flag.ravel(),
        }
    )


def future_closed(panel: DemandPanel, rows: np.ndarray, horizon: int, open_) -> np.ndarray:
    """[len(rows), horizon]: the shop's closed weekdays, plus each series' own closed weekdays
    and the closures planned by the panel's last day (`DemandPanel.known_future`)."""
    closed = np.broadcast_to(~np.asarray(open_, bool)[None, :], (len(rows), horizon)).copy()
    series_wd = getattr(panel, "series_closed_weekdays", None)
    if getattr(panel, "known", None) is not None or (series_wd is not None and series_wd.any()):
        closed |= panel.known_future(None, horizon).closed[rows, -horizon:]
    return closed


class Forecaster(Estimator, ABC):
    """One interface for every demand model (see module docstring for the output table).

    Saved as `forecaster.json` (kind, parameters, small state), the panel it predicts from
    (`save_panel`) and any native files of the kind.
    """

    fitted_attribute = "panel_"
    meta_file = "forecaster.json"

    @abstractmethod
    def fit(self, panel) -> Self: ...

    @abstractmethod
    def predict(self, horizon: int, product_ids=None) -> pd.DataFrame: ...

    def _save_files(self, path: Path) -> None:
        save_panel(self.panel_, path)

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> None:
        self.panel_ = load_panel(path)

    # helpers ---------------------------------------------------------------------------------
    def _check_fitted(self) -> DemandPanel:
        """The panel the model predicts from (NotFittedError before fit or load)."""
        check_is_fitted(self)
        return self.panel_

    def _rows(self, product_ids) -> np.ndarray:
        """Panel rows of `product_ids` (all when None); UnknownEntity naming unknown ones."""
        panel = self._check_fitted()
        if product_ids is None:
            return np.arange(panel.n_products)
        if isinstance(product_ids, str):
            product_ids = [product_ids]
        return panel.positions(product_ids)
