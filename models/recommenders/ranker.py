"""The second stage: a LightGBM LambdaRank model re-ranking the generators' candidates.

Training (`fit`) cuts the training period at `label_days` before its end: the generators are
fitted on the history before the cut, each customer's candidates are built from them, and a
candidate is relevant when the customer interacts with it after the cut (new products only);
features come from `features.ranking` at the cut, so nothing after it reaches them. Boosting
starts from scratch or from the first generator's order (its score z-scored over the candidates
as the initial score: the trees then learn corrections to it), whichever is better on the
held-out customers below.
The number of boosting rounds is chosen by early stopping on a seeded share of customers held
out (`valid_share`), then the ranker is refitted on every customer with that many rounds; on the
same held-out customers a penalty on item popularity is chosen, the best nDCG among those that
keep catalog coverage at least the first generator's (a ranker must not narrow the catalog it
re-ranks; when none does, the best nDCG). Serving uses the generators refitted on the whole
period and the same feature definition: a known customer's scores (cached by `precompute` like
every kind), a session's or a new visitor's per request. Products outside the candidates rank
after them, in the first generator's order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import InteractionConfig, InteractionMatrix, build_matrix
from features.ranking import (
    CustomerProfile,
    RankingState,
    feature_names,
    label_matrix,
    rank_features,
    split_cells,
    split_events_at,
)
from models.recommenders.candidates import CandidateSet, candidates, generator_names
from models.recommenders.catalog import align_catalog
from models.recommenders.composite import _Composite
from models.recommenders.interface import Recommender
from models.recommenders.scoring import ScoringRecommender
from shopml.errors import DataError

BOOSTER_FILE = "ranker.txt"
LOW = np.float32(-1e6)  # products outside the candidates score below every candidate
TIE = 1e-4  # equal ranker scores are ordered by the first generator's rank
EVAL_K = 20  # nDCG cut of early stopping and of the logged validation lift
STATE_PREFIX = "s_"


class RankerRecommender(_Composite):
    """LambdaRank over the union of `generators`' top-`n_candidates` products (see module)."""

    kind = "ranker"

    def __init__(
        self,
        generators: list[Recommender],
        n_candidates: int = 100,
        label_days: float = 30.0,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 20,
        valid_share: float = 0.25,
        seed: int = 0,
        penalties: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.8),
    ):
        self.generators = generators
        self.n_candidates = n_candidates
        self.label_days = label_days
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.valid_share = valid_share
        self.seed = seed
        self.penalties = penalties

    @property
    def parts(self) -> list[Recommender]:
        return self.generators

    # ---- fitting ----------------------------------------------------------------------------
    def use_events(self, events: pd.DataFrame, config: InteractionConfig) -> Self:
        """Let the next `fit` cut these events (the ones its matrix was built from) rather than
        the matrix's cells: a product bought on both sides of the cut then stays history."""
        self._events = (events, config)
        return self

    def fit(self, matrix: InteractionMatrix, products: pd.DataFrame | None = None) -> Self:
        """Train on a time split (see module), then serve from all of `matrix`. Without
        `use_events` the split is of the matrix's cells: a cell with events on both sides of
        the cut counts as a label then (its earlier events are not kept apart)."""
        if not self.generators:
            raise ValueError("a ranker needs at least one candidate generator")
        cut = self._cut_days(matrix)
        events = getattr(self, "_events", None)
        if events is not None:
            frame, cfg = events
            cut_ts = pd.Timestamp(cut * 86400, unit="s")
            before, pairs = split_events_at(frame, cut_ts)
            history = build_matrix(before, cfg.model_copy(update={"as_of": cut_ts.to_pydatetime()}))
            labels = label_matrix(pairs, history)
        else:
            history, labels = split_cells(matrix, cut)
        early = [g.clone().fit(history, products) for g in self.generators]
        for g in self.generators:
            g.fit(matrix, products)
        return self.fit_stages(early, history, labels, matrix, products)

    def _cut_days(self, matrix: InteractionMatrix) -> float:
        """`label_days` before the newest event; when that leaves less than half the cells as
        history (a short period), the day before which 80% of the cells lie."""
        last = matrix.last_seen_days
        if last is None or last.nnz == 0:
            raise DataError("the ranker needs event days (a matrix from build_matrix)")
        cut = float(last.data.max()) - self.label_days
        if (last.data < cut).mean() < 0.5:
            cut = float(np.quantile(last.data, 0.8))
        return cut

    def fit_stages(
        self,
        history_generators: list[Recommender],
        history: InteractionMatrix,
        labels: sp.csr_matrix,
        matrix: InteractionMatrix,
        products: pd.DataFrame | None = None,
    ) -> Self:
        """Learn the ranker from generators fitted on `history` and the `labels` after it
        (customers x products of `history`), then serve with `self.generators` (fitted on
        `matrix`, the whole training period)."""
        self.generator_names_ = generator_names(self.generators)
        self.feature_names_ = feature_names(self.generator_names_)
        self._learn(history_generators, history, labels, products)
        self._products = products
        return ScoringRecommender.fit(self, matrix, products)

    def _fit(self, X: sp.csr_matrix, matrix: InteractionMatrix) -> None:
        self.state_ = RankingState.from_matrix(
            matrix, self.category_codes_, self.available_, self._products
        )

    def _learn(self, gens, history, labels, products) -> None:
        codes, _, available = align_catalog(history.product_ids, products)
        state = RankingState.from_matrix(history, codes, available, products)
        X, y, groups, items, recall = training_groups(
            self, gens, state, history.purchased, sp.csr_matrix(labels)
        )
        self.candidate_recall_ = recall
        if not groups:
            raise DataError("no customer interacts with a candidate after the ranker's cut")
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(groups))
        n_valid = int(round(len(groups) * self.valid_share)) if len(groups) >= 8 else 0
        valid = np.zeros(len(groups), bool)
        valid[order[:n_valid]] = True
        rounds = self.n_estimators
        self.start_, self.penalty_, self.validation_ = 0.0, 0.0, {}
        best = None
        for start in (0.0, 1.0) if n_valid else ():  # from scratch, or from the lead's order
            self.start_ = start
            booster = self._train(X, y, groups, ~valid, valid, self.n_estimators)
            penalty, report = _held_out(self, booster, X, y, groups, items, valid)
            if best is None or report["ndcg@20"] > best[3]["ndcg@20"]:
                best = (start, max(booster.best_iteration, 1), penalty, report)
        if best is not None:
            self.start_, rounds, self.penalty_, self.validation_ = best
            self.validation_["start_from_lead"] = bool(self.start_)
        self.rounds_ = int(rounds)
        self.booster_ = self._train(X, y, groups, np.ones(len(groups), bool), None, rounds)

    def _train(self, X, y, groups, train, valid, rounds) -> lgb.Booster:
        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [EVAL_K],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 1,
            "verbose": -1,
        }
        bounds = np.concatenate([[0], np.cumsum(groups)])
        rows = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in np.flatnonzero(train)])
        dtrain = lgb.Dataset(
            X[rows],
            y[rows],
            init_score=self.start_ * X[rows, 0],
            group=np.asarray(groups)[train],
            feature_name=self.feature_names_,
            free_raw_data=False,
        )
        if valid is None:
            return lgb.train(params, dtrain, num_boost_round=rounds)
        vrows = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in np.flatnonzero(valid)])
        dvalid = lgb.Dataset(
            X[vrows],
            y[vrows],
            init_score=self.start_ * X[vrows, 0],
            group=np.asarray(groups)[valid],
            reference=dtrain,
        )
        return lgb.train(
            params,
            dtrain,
            num_boost_round=rounds,
            valid_sets=[dvalid],
            callbacks=[lgb.early_stopping(30, verbose=False)],
        )

    @property
    def feature_importance_(self) -> dict[str, float]:
        """Total gain of each feature, by name, largest first."""
        gain = self.booster_.feature_importance("gain")
        pairs = sorted(zip(self.feature_names_, gain.tolist(), strict=True), key=lambda p: -p[1])
        return {name: round(float(g), 3) for name, g in pairs}

    # ---- scoring ----------------------------------------------------------------------------
    def candidate_sets(self, gen_scores, hidden) -> list[CandidateSet]:
        """Each row's candidates from the generators' score rows (`gen_scores[g][i]`)."""
        return [
            candidates([s[i] for s in gen_scores], self.n_candidates, hidden[i])
            for i in range(len(hidden))
        ]

    def _rank(self, gen_scores, profiles, hidden) -> np.ndarray:
        """(n, n_items) scores: ranker scores on the candidates, `LOW` + the first generator's
        z-score elsewhere."""
        gen_scores = [np.asarray(s, np.float32).reshape(len(profiles), -1) for s in gen_scores]
        lead = gen_scores[0]
        z = (lead - lead.mean(axis=1, keepdims=True)) / np.maximum(
            lead.std(axis=1, keepdims=True), 1e-9
        )
        out = (LOW + np.clip(z, -50, 50)).astype(np.float32)
        sets = self.candidate_sets(gen_scores, hidden)
        now = self.state_.as_of_days
        feats = [
            rank_features(self.state_, p, c.items, c.scores, c.ranks, now)
            for p, c in zip(profiles, sets, strict=True)
        ]
        if not feats or sum(len(c.items) for c in sets) == 0:
            return out
        X = np.vstack(feats)
        pred = self.booster_.predict(X, num_threads=1) + self.start_ * X[:, 0]
        if self.penalty_:
            pred = pred - self.penalty_ * X[:, self.feature_names_.index("item_log_customers")]
        start = 0
        for i, c in enumerate(sets):
            m = len(c.items)
            out[i, c.items] = pred[start : start + m] - TIE * c.ranks[0] / (self.n_candidates + 1)
            start += m
        return out

    def _known(self, rows: np.ndarray, gen_scores) -> np.ndarray:
        profiles = [self.state_.profile(int(r)) for r in rows]
        hidden = [
            self._bought_indices[self._bought_indptr[r] : self._bought_indptr[r + 1]] for r in rows
        ]
        return self._rank(gen_scores, profiles, hidden)

    def _scores_known(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        return self._known(rows, [g._scores_known(rows) for g in self.generators])

    def _score_one(self, row: int) -> np.ndarray:
        return self._known(np.array([row]), [g._score_one(row) for g in self.generators])[0]

    def _scores_items(self, X: sp.csr_matrix) -> np.ndarray:
        X = sp.csr_matrix(X, dtype=np.float32)
        now = self.state_.as_of_days
        profiles, hidden = [], []
        for i in range(X.shape[0]):
            items = X.indices[X.indptr[i] : X.indptr[i + 1]]
            profiles.append(
                CustomerProfile.session(items, X.data[X.indptr[i] : X.indptr[i + 1]], now)
            )
            hidden.append(items)
        return self._rank([g._scores_items(X) for g in self.generators], profiles, hidden)

    def _score_weights(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """A session's or a new visitor's scores, computed per request (NumPy and LightGBM)."""
        profile = CustomerProfile.session(items, weights, self.state_.as_of_days)
        gens = [g._score_weights(items, weights) for g in self.generators]
        return self._rank(gens, [profile], [items])[0]

    def _similar_scores(self, item: int) -> np.ndarray:
        return self.generators[0]._similar_scores(item)

    def features_for(self, customer_id: str, product_ids) -> np.ndarray:
        """The served features of a known customer for the given products (as the ranker sees
        them: candidates of the customer's own generators' scores; products outside the
        candidates get NaN rows)."""
        row = self.customer_index_[customer_id]
        gens = [g._score_one(row) for g in self.generators]
        hidden = self._bought_indices[self._bought_indptr[row] : self._bought_indptr[row + 1]]
        c = candidates(gens, self.n_candidates, hidden)
        feats = rank_features(
            self.state_,
            self.state_.profile(row),
            c.items,
            c.scores,
            c.ranks,
            self.state_.as_of_days,
        )
        want = np.array([self.product_index_[str(p)] for p in product_ids])
        pos = {int(i): j for j, i in enumerate(c.items.tolist())}
        out = np.full((len(want), feats.shape[1]), np.nan, np.float32)
        for j, i in enumerate(want.tolist()):
            if i in pos:
                out[j] = feats[pos[i]]
        return out

    # ---- persistence ------------------------------------------------------------------------
    def _json_params(self) -> dict[str, Any]:
        params = {k: v for k, v in Recommender._json_params(self).items() if k != "generators"}
        return params | {"n_parts": len(self.generators)}

    def _json_state(self) -> dict[str, Any]:
        return {
            "generator_names": self.generator_names_,
            "feature_names": self.feature_names_,
            "rounds": self.rounds_,
            "penalty": self.penalty_,
            "start": self.start_,
            "candidate_recall": self.candidate_recall_,
            "validation": self.validation_,
        }

    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {f"{STATE_PREFIX}{k}": v for k, v in self.state_.arrays().items()}

    def _set_model_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(STATE_PREFIX)
        self.state_ = RankingState.from_arrays({k[n:]: v for k, v in arrays.items()})

    def _save_files(self, path: Path) -> None:
        super()._save_files(path)
        self.booster_.save_model(str(path / BOOSTER_FILE))

    @classmethod
    def _init_params(cls, params: dict[str, Any], path: Path) -> dict[str, Any]:
        rest = {k: v for k, v in params.items() if k != "n_parts"}
        if "penalties" in rest:
            rest["penalties"] = tuple(rest["penalties"])
        return {"generators": cls._load_parts(params, path), **rest}

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> None:
        self.generator_names_ = meta["generator_names"]
        self.feature_names_ = meta["feature_names"]
        self.rounds_ = meta["rounds"]
        self.penalty_ = meta["penalty"]
        self.start_ = meta["start"]
        self.candidate_recall_ = meta["candidate_recall"]
        self.validation_ = meta["validation"]
        self.booster_ = lgb.Booster(model_file=str(path / BOOSTER_FILE))
        super()._restore(meta, arrays, path)


def training_groups(ranker, gens, state: RankingState, purchased, labels: sp.csr_matrix, block=512):
    """The ranker's training rows: features, relevance, group sizes and candidates of every
    customer with history and at least one relevant candidate; and candidate recall per generator and for
    the union (mean share of each labelled customer's relevant products among them)."""
    n_rel = np.diff(labels.indptr)
    has_history = np.diff(state.weights.indptr) > 0
    rows = np.flatnonzero((n_rel > 0) & has_history)
    names = generator_names(ranker.generators)
    hits = {name: 0.0 for name in [*names, "union"]}
    X, y, groups, items = [], [], [], []
    for start in range(0, len(rows), block):
        chunk = rows[start : start + block]
        scores = [np.asarray(g._scores_known(chunk), np.float32) for g in gens]
        hidden = [purchased.indices[purchased.indptr[r] : purchased.indptr[r + 1]] for r in chunk]
        for r, c in zip(chunk, ranker.candidate_sets(scores, hidden), strict=True):
            rel = np.isin(c.items, labels.indices[labels.indptr[r] : labels.indptr[r + 1]])
            total = n_rel[r]
            hits["union"] += rel.sum() / total
            for g, name in enumerate(names):
                hits[name] += (rel & c.proposed[g]).sum() / total
            if rel.any():
                X.append(
                    rank_features(
                        state, state.profile(r), c.items, c.scores, c.ranks, state.as_of_days
                    )
                )
                y.append(rel.astype(np.float32))
                groups.append(len(c.items))
                items.append(c.items)
    recall = {name: round(float(h / max(len(rows), 1)), 4) for name, h in hits.items()}
    if not groups:
        return np.zeros((0, len(ranker.feature_names_)), np.float32), np.zeros(0), [], [], recall
    return np.vstack(X), np.concatenate(y), groups, items, recall


def _ndcg(order_scores: np.ndarray, rel: np.ndarray, k: int) -> float:
    """nDCG@k of one group ranked by `order_scores` (higher first)."""
    top = np.argsort(-order_scores, kind="stable")[:k]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((rel[top] * disc[: len(top)]).sum())
    ideal = float(disc[: min(int(rel.sum()), k)].sum())
    return dcg / ideal if ideal else 0.0


def _held_out(ranker, booster, X, y, groups, items, valid) -> tuple[float, dict[str, Any]]:
    """On the held-out customers, within their candidates: the popularity penalty (among
    `ranker.penalties`, in units of the ranker score's spread) with the best nDCG@20 whose
    catalog coverage is at least the first generator's on the same customers (the ranker may
    not narrow the catalog below the model it re-ranks), and that nDCG beside each generator's
    own order; returns (penalty per unit of item_log_customers, report)."""
    bounds = np.concatenate([[0], np.cumsum(groups)])
    held = np.flatnonzero(valid)
    rows = np.concatenate([np.arange(bounds[g], bounds[g + 1]) for g in held])
    pred = booster.predict(X[rows], num_iteration=booster.best_iteration)
    pred = pred + ranker.start_ * X[rows, 0]
    pop = X[rows, ranker.feature_names_.index("item_log_customers")]
    spread = float(np.std(pred)) or 1.0
    sizes = np.asarray(groups)[held]
    cuts = np.concatenate([[0], np.cumsum(sizes)])
    cand = np.concatenate([items[g] for g in held])
    rel = y[rows]

    def judge(order_scores):
        ndcg, shown = 0.0, set()
        for j in range(len(held)):
            lo, hi = cuts[j], cuts[j + 1]
            ndcg += _ndcg(order_scores[lo:hi], rel[lo:hi], EVAL_K)
            top = np.argsort(-order_scores[lo:hi], kind="stable")[:EVAL_K]
            shown.update(cand[lo:hi][top].tolist())
        return ndcg / len(held), len(shown)

    n_gen = len(ranker.generator_names_)
    per = {}
    lead_shown = 0
    for g in range(n_gen):
        per[ranker.generator_names_[g]], shown = judge(-X[rows, 2 * g + 1])
        lead_shown = shown if g == 0 else lead_shown
    tried = {lam: judge(pred - lam * spread * pop) for lam in ranker.penalties}
    ok = [lam for lam in ranker.penalties if tried[lam][1] >= lead_shown] or list(tried)
    chosen = max(ok, key=lambda lam: (tried[lam][0], -lam))
    best = max(per, key=per.get)
    ndcg = tried[chosen][0]
    report = {
        "ndcg@20": round(float(ndcg), 4),
        "generators_ndcg@20": {k: round(v, 4) for k, v in per.items()},
        "best_generator": best,
        "lift": round(float(ndcg / per[best] - 1.0), 4) if per[best] > 0 else None,
        "popularity_penalty": chosen,
        "penalties_tried": {
            str(lam): {"ndcg@20": round(v[0], 4), "products_shown": v[1]}
            for lam, v in tried.items()
        },
        "lead_products_shown": lead_shown,
        "customers": len(held),
    }
    return chosen * spread, report
