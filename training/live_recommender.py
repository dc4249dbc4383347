"""Live performance of the served recommenders, from the feedback the storefront sends back.

A *list* is one `/recommend` answer the storefront reported at least one impression of (its
`request_id`). Click-through at k is the share of lists with a click on one of their first k
products; conversion at k the share with a purchase of one of them. A click or purchase takes
its position from the event, else from the impression of the same product in the same list;
one that matches no impressed list is not counted (it says nothing about a list shown).
Each rate comes with its Wilson score interval, per model version and A/B variant.

The A/B comparison puts the challenger variant's lists beside the champion variant's lists of
the same period (from the challenger's first list to its last), so both saw the same days. A
one-sided two-proportion z-test says whether the challenger's rate is higher; the promotion
gate (`live_check`) can require that to be significant (`FamilySpec.live_ab`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from features.feedback import FeedbackStore
from models.family import LiveABRule, family
from shopml.errors import ShopmlError
from shopml.settings import Settings
from training.families import family_spec

Z95 = 1.959963984540054  # two-sided 95 %
METRICS = ("ctr", "conversion")
_SUCCESS_EVENT = {"ctr": "click", "conversion": "purchase"}


@dataclass(frozen=True)
class Rate:
    """`successes` of `trials` with the Wilson 95 % interval (None rate when no trials)."""

    successes: int
    trials: int

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.successes, self.trials)

    def text(self) -> str:
        if not self.trials:
            return "-"
        low, high = self.interval
        return f"{self.rate:.2%} [{low:.2%}, {high:.2%}]"


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) with no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_test(champion: Rate, challenger: Rate) -> tuple[float, float]:
    """z statistic (pooled) and one-sided p-value of "the challenger's rate is higher"."""
    n1, n2 = champion.trials, challenger.trials
    if not n1 or not n2:
        return 0.0, 1.0
    pooled = (champion.successes + challenger.successes) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (challenger.successes / n2 - champion.successes / n1) / se
    return z, 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True)
class LiveRow:
    """Live numbers of one model version in one variant."""

    model_version: str
    variant: str
    lists: int
    impressions: int
    ctr: Rate
    conversion: Rate
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None

    def rate(self, metric: str) -> Rate:
        return self.ctr if metric == "ctr" else self.conversion


def _positions(feedback: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Impressions, and the other events with the position of their product in the list."""
    imp = feedback[feedback["event"] == "impression"]
    shown = imp.groupby(["request_id", "product_id"], sort=False)["position"].min()
    acts = feedback[feedback["event"] != "impression"]
    known = acts["position"]
    looked_up = pd.Series(
        shown.reindex(pd.MultiIndex.from_frame(acts[["request_id", "product_id"]])).to_numpy(),
        index=acts.index,
        dtype="Int64",
    )
    acts = acts.assign(position=known.fillna(looked_up))
    return imp, acts


def live_rows(feedback: pd.DataFrame, k: int = 20, endpoint: str = "recommend") -> list[LiveRow]:
    """Click-through and conversion at `k` per model version and variant, from stored feedback
    (`FeedbackStore.read()`), for the lists of `endpoint`."""
    feedback = feedback[feedback["endpoint"] == endpoint]
    if feedback.empty:
        return []
    imp, acts = _positions(feedback)
    lists = imp.groupby("request_id", sort=False).agg(
        model_version=("model_version", "first"),
        variant=("variant", "first"),
        impressions=("event", "size"),
        first=("received_at", "min"),
    )
    top = acts[acts["request_id"].isin(lists.index) & (acts["position"] <= k).fillna(False)]
    for metric, event in _SUCCESS_EVENT.items():
        hit = top.loc[top["event"] == event, "request_id"].unique()
        lists[metric] = lists.index.isin(hit)
    rows = []
    for (version, variant), g in lists.groupby(["model_version", "variant"], sort=True):
        n = len(g)
        rows.append(
            LiveRow(
                str(version),
                str(variant),
                n,
                int(g["impressions"].sum()),
                Rate(int(g["ctr"].sum()), n),
                Rate(int(g["conversion"].sum()), n),
                g["first"].min(),
                g["first"].max(),
            )
        )
    return rows


@dataclass(frozen=True)
class ABResult:
    """The challenger variant against the champion variant on one metric, same period."""

    metric: str
    k: int
    challenger_version: str
    champion: Rate
    challenger: Rate
    z: float
    p_value: float  # one-sided: the challenger's rate is higher

    @property
    def lift(self) -> float | None:
        a, b = self.champion.rate, self.challenger.rate
        return (b - a) / a if a and b is not None else None

    def significant(self, alpha: float) -> bool:
        return self.p_value < alpha and self.z > 0


def ab_results(
    feedback: pd.DataFrame, k: int = 20, metric: str = "ctr", endpoint: str = "recommend"
) -> list[ABResult]:
    """One A/B comparison per challenger version: its lists against the champion variant's
    lists received in the same period."""
    if metric not in METRICS:
        raise ShopmlError(f"live metric {metric!r}: expected one of {', '.join(METRICS)}")
    rows = live_rows(feedback, k, endpoint)
    out = []
    for row in (r for r in rows if r.variant == "challenger"):
        window = feedback[
            (feedback["received_at"] >= row.first) & (feedback["received_at"] <= row.last)
        ]
        control = [r for r in live_rows(window, k, endpoint) if r.variant == "champion"]
        champion = Rate(
            sum(r.rate(metric).successes for r in control), sum(r.lists for r in control)
        )
        z, p = two_proportion_test(champion, row.rate(metric))
        out.append(ABResult(metric, k, row.model_version, champion, row.rate(metric), z, p))
    return out


def version_label(family_name: str, version: str) -> str:
    """How answers and feedback name a registered version (`shopml-recommender/3`)."""
    return f"{family(family_name).registered_model}/{version}"


@dataclass(frozen=True)
class LiveCheck:
    """The outcome of the gate's live check, in words (training.promotion turns it into a Check)."""

    passed: bool
    detail: str


def live_check(
    rule: LiveABRule, challenger_version: str, feedback: pd.DataFrame, family_name: str
) -> LiveCheck:
    """Whether the challenger's live A/B win is significant: enough lists on both sides, and
    its rate higher with a one-sided p-value below `rule.alpha`."""
    label = version_label(family_name, challenger_version)
    found = [r for r in ab_results(feedback, rule.k, rule.metric) if r.challenger_version == label]
    what = f"{rule.metric}@{rule.k}"
    if not found:
        return LiveCheck(
            False,
            f"no feedback on lists of {label} as the A/B challenger: serve it to a share of "
            "customers (SHOPML_AB_SHARE) and send the storefront's feedback to POST /feedback",
        )
    ab = found[0]
    shown = (
        f"challenger {ab.challenger.text()} on {ab.challenger.trials} lists vs champion "
        f"{ab.champion.text()} on {ab.champion.trials} lists, z {ab.z:.2f}, one-sided p "
        f"{ab.p_value:.3g}"
    )
    small = min(ab.champion.trials, ab.challenger.trials)
    if small < rule.min_lists:
        return LiveCheck(False, f"{what}: {shown}; at least {rule.min_lists} lists a side needed")
    if not ab.significant(rule.alpha):
        return LiveCheck(False, f"{what}: {shown}; not a significant win at alpha {rule.alpha}")
    return LiveCheck(True, f"{what}: {shown}; a significant win at alpha {rule.alpha}")


def read_feedback(settings: Settings | None = None) -> pd.DataFrame:
    """Every stored feedback event (FeedbackStoreError when the store is down)."""
    store = FeedbackStore.open(settings)
    try:
        return store.read()
    finally:
        store.dispose()


def feedback_tables(ctx) -> list:
    """`shopml monitor recommender`'s live tables (training.live_performance.PROVIDERS):
    click-through and conversion at k per model version and variant, beside the offline
    test metrics of the champion, then the A/B comparison with its p-values."""
    from training.live_performance import PerformanceTable

    rule = family_spec("recommender").live_ab or LiveABRule()
    k = rule.k
    feedback = read_feedback(ctx.settings)
    rows = live_rows(feedback, k)
    off = offline_text(ctx.offline_metrics or {})
    champion = version_label("recommender", ctx.champion_version) if ctx.champion_version else ""
    table = PerformanceTable(
        title=f"live recommendations (feedback): click-through and conversion at {k}",
        columns=[
            "model version",
            "variant",
            "lists",
            "impressions",
            f"CTR@{k} [95% CI]",
            f"conversion@{k} [95% CI]",
            "offline",
        ],
        rows=[
            [
                r.model_version,
                r.variant,
                r.lists,
                r.impressions,
                r.ctr.text(),
                r.conversion.text(),
                off if r.model_version == champion else "",
            ]
            for r in rows
        ],
        note=""
        if rows
        else "no feedback yet: the storefront posts impressions and clicks to "
        "POST /feedback with each answer's request_id",
    )
    tables = [table]
    ab_rows, alarms = [], []
    for metric in METRICS:
        for ab in ab_results(feedback, k, metric):
            lift = "" if ab.lift is None else f"{ab.lift:+.1%}"
            ab_rows.append(
                [
                    ab.challenger_version,
                    f"{metric}@{k}",
                    ab.champion.text(),
                    ab.challenger.text(),
                    lift,
                    f"{ab.z:.2f}",
                    f"{ab.p_value:.3g}",
                ]
            )
            if ab.z < 0 and _lower_p(ab) < rule.alpha:
                alarms.append(
                    f"A/B challenger {ab.challenger_version} {metric}@{k} significantly lower "
                    f"than the champion's (z {ab.z:.2f})"
                )
    if ab_rows:
        tables.append(
            PerformanceTable(
                title="A/B split: challenger against the champion's lists of the same period",
                columns=[
                    "challenger",
                    "metric",
                    "champion [95% CI]",
                    "challenger [95% CI]",
                    "lift",
                    "z",
                    "p (challenger higher)",
                ],
                rows=ab_rows,
                alarms=alarms,
            )
        )
    return tables


def offline_text(metrics: dict[str, float]) -> str:
    """The champion's offline test hit rate and nDCG (at the k its job tested), for the side by
    side: a list's offline hit rate is the closest to its live click-through."""
    shown = [
        f"{name.replace('_at_', '@')} {metrics[name]:.4g}"
        for prefix in ("hit_rate_at_", "ndcg_at_")
        for name in sorted(metrics)
        if name.startswith(prefix) and name[len(prefix) :].isdigit()
    ]
    return ", ".join(shown)


def _lower_p(ab: ABResult) -> float:
    """One-sided p-value of "the challenger's rate is lower"."""
    return 0.5 * math.erfc(-ab.z / math.sqrt(2))


__all__ = [
    "ABResult",
    "LiveRow",
    "Rate",
    "ab_results",
    "feedback_tables",
    "live_check",
    "live_rows",
    "two_proportion_test",
    "wilson",
]
