"""Intermittent and lumpy series: demand classes by ADI / CV² and the models suited to them.

Syntetos-Boylan classes from a series' observed days (closed days skipped): ADI = observed days
per day with a sale, CV² = squared coefficient of variation of the non-zero sizes. ADI >= 1.32
with CV² < 0.49 is intermittent (Croston SBA), with CV² >= 0.49 lumpy (ADIDA: aggregate, then
smooth); smooth and erratic series stay with the global model. `LightGBMForecaster` keeps the
suited model for a class only where it beat the global one on the held-out calibration days.
"""

from __future__ import annotations

import numpy as np
from statsforecast.models import ADIDA, CrostonSBA

from features.demand import DemandPanel

ADI_CUT, CV2_CUT = 1.32, 0.49
CLASSES = ("smooth", "erratic", "intermittent", "lumpy", "no_sales")
HISTORY_DAYS = 364  # the series the class and the model read: the last year of observed days
SUITED = {"intermittent": CrostonSBA, "lumpy": ADIDA}


def demand_class(days: np.ndarray) -> str:
    """The Syntetos-Boylan class of one series of observed daily units (NaN-free)."""
    sales = days[days > 0]
    if len(sales) == 0:
        return "no_sales"
    adi = len(days) / len(sales)
    cv2 = float(np.var(sales) / np.mean(sales) ** 2) if len(sales) > 1 else 0.0
    if adi < ADI_CUT:
        return "smooth" if cv2 < CV2_CUT else "erratic"
    return "intermittent" if cv2 < CV2_CUT else "lumpy"


def _observed(panel: DemandPanel, p: int) -> np.ndarray:
    row = panel.units[p, -HISTORY_DAYS:]
    return row[~np.isnan(row)]


def demand_classes(panel: DemandPanel) -> np.ndarray:
    """The class of every product of the panel (object array of CLASSES names)."""
    return np.array(
        [demand_class(_observed(panel, p)) for p in range(panel.n_products)], dtype=object
    )


def suited_means(panel: DemandPanel, classes: np.ndarray, horizon: int) -> np.ndarray:
    """Mean forecast per product per day from the model suited to its class ([p, horizon];
    NaN for classes without one). Flat over the horizon, as these models are."""
    out = np.full((panel.n_products, horizon), np.nan)
    for p, cls in enumerate(classes):
        model = SUITED.get(cls)
        if model is None:
            continue
        y = _observed(panel, p)
        if len(y) < 2:
            continue
        out[p] = float(model().forecast(y=y, h=1)["mean"][0])
    return out
