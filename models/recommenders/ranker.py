"""The second stage: a LightGBM LambdaRank model re-ranking the generators' candidates.

Training (`fit`) cuts the training period into time windows inside it: the cut `label_days`
before its end and, up to `n_windows`, cuts `label_days` earlier each (while at least half the
cells lie before a cut). At each cut the generators are fitted on the history before it, each
customer's candidates are built from them, and a candidate is relevant when the customer first
uses it in the window after the cut (new products only, the window ending at the next cut);
features come from `features.ranking` at the cut, so nothing after it reaches them.

The windows are stacked: the ranker learns across several regimes, not one month's. Its choices
are made on the latest window with a ranker trained on the earlier ones only (a test of how it
carries forward in time, as it must at serving): the number of boosting rounds (early
stopping), whether boosting starts from scratch or from the first generator's order (its score
z-scored over the candidates as the initial score), and how the final score mixes in a penalty
on item popularity and the first generator's z-score (`penalties` x `anchors`, in units of the
ranker score's spread): the best nDCG among the mixes that keep catalog coverage at least the
first generator's (a ranker must not narrow the catalog it re-ranks; or `min_coverage`, when a
protocol asks a coverage of every model), else the widest
coverage among those with at least the first generator's nDCG, else the best nDCG. With one window
only, a seeded share of its customers (`valid_share`) is held out instead. Then the ranker is
refitted on every window with those choices. The gate (`gate`): when on that validation the
ranker does not beat the best generator's own order, the model serves that generator's scores
(its answers' `source` says `ranker:<generator>`), so a second stage never loses to a first.

Serving uses the generators refitted on the whole period and the same feature definition: a
known customer's scores (cached by `precompute` like every kind), a session's or a new
visitor's per request. Products outside the candidates rank after them, in the first
generator's order.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp
from lightgbm.basic import _LIB, _safe_call

from features.interactions import InteractionConfig, InteractionMatrix, build_matrix
from features.ranking import (
    CustomerProfile,
    RankingState,
    feature_names,
    label_matrix,
    rank_features,
    split_cells,
    split_events_at,
    zscore_rows,
)
from models.recommenders.candidates import CandidateSet, candidates, generator_names
from models.recommenders.catalog import align_catalog
from models.recommenders.compiled_trees import CompiledForest
from models.recommenders.composite import _Composite
from models.recommenders.interface import Recommender
from models.recommenders.scoring import ScoringRecommender
from shopml.errors import DataError
from shopml.log import get_logger

log = get_logger("models.recommenders.ranker")

BOOSTER_FILE = "ranker.txt"
LOW = np.float32(-1e6)  # products outside the candidates score below every candidate
_CLIP = np.float32(50.0)  # the lead's z-score outside the candidates is clipped to +-50
TIE = 1e-4  # equal ranker scores are ordered by the first generator's rank
STATE_PREFIX = "s_"
MIN_HISTORY_SHARE = 0.5  # an earlier cut is used while this share of the cells lies before it
_FLOAT32, _ROW_MAJOR, _PREDICT_NORMAL = 0, 1, 0  # LightGBM C API constants
_ONE_THREAD = ctypes.c_char_p(b"num_threads=1")


@dataclass
class Window:
    """One time split inside the training period: `generators` fitted on `history` (as of the
    cut) and the binary `labels` (customers x products of `history`) of the window after it."""

    generators: list[Recommender]
    history: InteractionMatrix
    labels: sp.csr_matrix


@dataclass
class Groups:
    """The ranker's rows: features `X`, relevance `y`, one group per customer (`sizes`, its
    candidate `items`, `totals`: its relevant products inside and outside the candidates), in
    a catalog of `n_items` products."""

    X: np.ndarray
    y: np.ndarray
    sizes: list[int]
    items: list[np.ndarray]
    totals: list[int]
    n_items: int = 0

    @classmethod
    def stack(cls, parts: list[Groups]) -> Groups:
        parts = [p for p in parts if p.sizes]
        if not parts:
            return cls(np.zeros((0, 0), np.float32), np.zeros(0, np.float32), [], [], [])
        return cls(
            np.vstack([p.X for p in parts]),
            np.concatenate([p.y for p in parts]),
            [s for p in parts for s in p.sizes],
            [i for p in parts for i in p.items],
            [t for p in parts for t in p.totals],
            parts[-1].n_items,
        )

    def subset(self, keep: np.ndarray) -> Groups:
        """The groups where `keep` (one flag per group) holds."""
        bounds = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        chosen = np.flatnonzero(keep)
        rows = np.concatenate([np.arange(bounds[g], bounds[g + 1]) for g in chosen])
        return Groups(
            self.X[rows],
            self.y[rows],
            [self.sizes[g] for g in chosen],
            [self.items[g] for g in chosen],
            [self.totals[g] for g in chosen],
            self.n_items,
        )

    def relevant(self) -> Groups:
        """The groups with at least one relevant candidate (the others teach LambdaRank
        nothing)."""
        bounds = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        hits = np.add.reduceat(self.y, bounds[:-1]) if self.sizes else np.zeros(0)
        return self.subset(hits > 0) if self.sizes else self


class RankerRecommender(_Composite):
    """LambdaRank over the union of `generators`' top-`n_candidates` products (see module)."""

    kind = "ranker"

    def __init__(
        self,
        generators: list[Recommender],
        n_candidates: int = 100,
        label_days: float = 30.0,
        n_windows: int = 2,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 20,
        feature_fraction: float = 1.0,
        valid_share: float = 0.25,
        eval_k: int = 20,
        gate: bool = True,
        seed: int = 0,
        penalties: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.8),
        anchors: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0),
        min_coverage: float | None = None,
    ):
        self.generators = generators
        self.n_candidates = n_candidates
        self.label_days = label_days
        self.n_windows = n_windows
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction  # share of features each tree may split on
        self.valid_share = valid_share
        self.eval_k = eval_k
        self.gate = gate
        self.seed = seed
        self.penalties = penalties
        self.anchors = anchors
        self.min_coverage = min_coverage

    @property
    def parts(self) -> list[Recommender]:
        return self.generators

    @property
    def name(self) -> str:
        """`ranker`, or `ranker:<generator>` when the gate serves that generator's order."""
        fallback = getattr(self, "fallback_", None)
        return self.kind if fallback is None else f"{self.kind}:{self.generator_names_[fallback]}"

    # ---- fitting ----------------------------------------------------------------------------
    def use_events(self, events: pd.DataFrame, config: InteractionConfig) -> Self:
        """Let the next `fit` cut these events (the ones its matrix was built from) rather than
        the matrix's cells: a product bought on both sides of the cut then stays history."""
        self._events = (events, config)
        return self

    def fit(self, matrix: InteractionMatrix, products: pd.DataFrame | None = None) -> Self:
        """Train on time windows (see module), then serve from all of `matrix`. Without
        `use_events` the split is of the matrix's cells: a cell with events on both sides of
        a cut counts as a label then (its earlier events are not kept apart)."""
        if not self.generators:
            raise ValueError("a ranker needs at least one candidate generator")
        cuts = self._cuts(matrix)
        ends = [*cuts[1:], None]
        windows = [self._window(matrix, c, e, products) for c, e in zip(cuts, ends, strict=True)]
        for g in self.generators:
            g.fit(matrix, products)
        return self.fit_stages(windows, matrix, products)

    def _window(self, matrix, cut: float, end: float | None, products) -> Window:
        """The generators fitted before day `cut`, and the labels of [cut, end)."""
        events = getattr(self, "_events", None)
        if events is not None:
            frame, cfg = events
            cut_ts = pd.Timestamp(cut * 86400, unit="s")
            end_ts = None if end is None else pd.Timestamp(end * 86400, unit="s")
            before, pairs = split_events_at(frame, cut_ts, end_ts)
            history = build_matrix(before, cfg.model_copy(update={"as_of": cut_ts.to_pydatetime()}))
            labels = label_matrix(pairs, history)
        else:
            history, labels = split_cells(matrix, cut, end)
        return Window([g.clone().fit(history, products) for g in self.generators], history, labels)

    def _cuts(self, matrix: InteractionMatrix) -> list[float]:
        """Cut days, oldest first: `label_days`, 2 x `label_days`, ... before the newest event
        (at most `n_windows`), each while at least half the cells lie before it; when not even
        the first does (a short period), the day before which 80% of the cells lie."""
        last = matrix.last_seen_days
        if last is None or last.nnz == 0:
            raise DataError("the ranker needs event days (a matrix from build_matrix)")
        newest = float(last.data.max())
        cuts = []
        for i in range(1, max(self.n_windows, 1) + 1):
            cut = newest - i * self.label_days
            if (last.data < cut).mean() < MIN_HISTORY_SHARE:
                break
            cuts.append(cut)
        return cuts[::-1] or [float(np.quantile(last.data, 0.8))]

    def fit_stages(
        self,
        windows: list[Window],
        matrix: InteractionMatrix,
        products: pd.DataFrame | None = None,
    ) -> Self:
        """Learn the ranker from the `windows` (oldest first; each with its generators fitted
        on its history), then serve with `self.generators` (fitted on `matrix`, the whole
        training period)."""
        if not windows:
            raise ValueError("the ranker needs at least one training window")
        self.generator_names_ = generator_names(self.generators)
        self.feature_names_ = feature_names(self.generator_names_)
        self._learn(windows, products)
        self._products = products
        return ScoringRecommender.fit(self, matrix, products)

    def _fit(self, X: sp.csr_matrix, matrix: InteractionMatrix) -> None:
        self.state_ = RankingState.from_matrix(
            matrix, self.category_codes_, self.available_, self._products
        )

    def _groups(self, window: Window, products, keep_all=False) -> tuple[Groups, dict]:
        codes, _, available = align_catalog(window.history.product_ids, products)
        state = RankingState.from_matrix(window.history, codes, available, products)
        labels = sp.csr_matrix(window.labels)
        return training_groups(
            self, window.generators, state, window.history.purchased, labels, keep_all=keep_all
        )

    def _learn(self, windows: list[Window], products) -> None:
        # the latest window keeps every labelled customer: it is judged on (catalog coverage
        # and nDCG over all of them, as the test's metrics), and learns from the relevant ones
        built = [
            self._groups(w, products, keep_all=i == len(windows) - 1) for i, w in enumerate(windows)
        ]
        self.candidate_recall_ = built[-1][1]
        latest = built[-1][0]
        earlier = Groups.stack([g for g, _ in built[:-1]])
        every = Groups.stack([earlier, latest.relevant()])
        if not every.sizes:
            raise DataError("no customer interacts with a candidate after the ranker's cut")
        if earlier.sizes and latest.relevant().sizes:  # learn on the earlier, judge the latest
            train, valid, how = earlier, latest, "latest window"
        else:
            train, valid, how = self._held_out_split(latest)
        self.start_, self.penalty_, self.anchor_ = 0.0, 0.0, 0.0
        self.validation_, self.fallback_ = {}, None
        rounds, best = self.n_estimators, None
        for start in (0.0, 1.0) if valid is not None else ():  # from scratch, or the lead's order
            self.start_ = start
            booster = self._train(train, valid, self.n_estimators)
            mix, report = _held_out(self, booster, valid)
            if best is None or report["ndcg"] > best[3]["ndcg"]:
                best = (start, max(booster.best_iteration, 1), mix, report)
        if best is not None:
            self.start_, rounds, (self.penalty_, self.anchor_), self.validation_ = best
            self.validation_ |= {"start_from_lead": bool(self.start_), "judged_on": how}
            self.validation_["windows"] = len(windows)
            lift = self.validation_["lift"]
            if self.gate and lift is not None and lift <= 0:
                self.fallback_ = self.generator_names_.index(self.validation_["best_generator"])
            self.validation_["gate_open"] = self.fallback_ is None
        self.rounds_ = int(rounds)
        self.booster_ = self._train(every, None, self.rounds_)

    def _held_out_split(self, latest: Groups) -> tuple[Groups, Groups | None, str]:
        """A seeded share of the customers held out (one window only); none below 8."""
        n = len(latest.sizes)
        n_valid = int(round(n * self.valid_share)) if n >= 8 else 0
        train = latest.relevant()
        if not n_valid or not train.sizes:
            return train, None, "none"
        order = np.random.default_rng(self.seed).permutation(n)
        valid = np.zeros(n, bool)
        valid[order[:n_valid]] = True
        train = latest.subset(~valid).relevant()
        if not train.sizes or not latest.subset(valid).relevant().sizes:
            return latest.relevant(), None, "none"
        return train, latest.subset(valid), "held-out customers"

    def _train(self, train: Groups, valid: Groups | None, rounds: int) -> lgb.Booster:
        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [self.eval_k],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 1,
            "verbose": -1,
        }
        dtrain = lgb.Dataset(
            train.X,
            train.y,
            init_score=self.start_ * train.X[:, 0],
            group=train.sizes,
            feature_name=self.feature_names_,
            free_raw_data=False,
        )
        if valid is None:
            return lgb.train(params, dtrain, num_boost_round=rounds)
        dvalid = lgb.Dataset(
            valid.X,
            valid.y,
            init_score=self.start_ * valid.X[:, 0],
            group=valid.sizes,
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
        z-score elsewhere; the gated generator's own scores when the gate is closed."""
        if self.fallback_ is not None:
            return np.asarray(gen_scores[self.fallback_], np.float32).reshape(len(profiles), -1)
        gen_scores = [np.asarray(s, np.float32).reshape(len(profiles), -1) for s in gen_scores]
        out = _outside(gen_scores[0])
        sets = self.candidate_sets(gen_scores, hidden)
        now = self.state_.as_of_days
        feats = [
            rank_features(self.state_, p, c.items, c.scores, c.ranks, now)
            for p, c in zip(profiles, sets, strict=True)
        ]
        if not feats or sum(len(c.items) for c in sets) == 0:
            return out
        X = np.vstack(feats)
        pred = self._final_scores(X)
        start = 0
        for i, c in enumerate(sets):
            m = len(c.items)
            out[i, c.items] = pred[start : start + m] - TIE * c.ranks[0] / (self.n_candidates + 1)
            start += m
        return out

    def _rank_one(self, gen_scores, profile: CustomerProfile, hidden) -> np.ndarray:
        """`_rank` of one customer or session (the per-request path), the same scores: the
        generators' rows selected as one block, the features written into one matrix, the
        booster called once through the C API."""
        if self.fallback_ is not None:
            return np.asarray(gen_scores[self.fallback_], np.float32).reshape(-1)
        block = np.array(gen_scores, dtype=np.float32, ndmin=2)
        out = _outside(block[:1])[0]
        c = candidates(block, self.n_candidates, hidden)  # negates a copy: block is kept
        if len(c.items) == 0:
            return out
        X = rank_features(self.state_, profile, c.items, c.scores, c.ranks, self.state_.as_of_days)
        out[c.items] = self._final_scores(X) - TIE * c.ranks[0] / (self.n_candidates + 1)
        return out

    def _final_scores(self, X: np.ndarray) -> np.ndarray:
        """The served score of feature rows: the booster's, from the lead's order when it
        started from it, with the chosen popularity penalty and lead anchor."""
        pred = self._predict(X)
        lead = X[:, 0]
        if self.start_ or not np.isfinite(lead).all():  # else p + 0 * z is p itself
            pred += self.start_ * lead
        if self.penalty_:
            pred -= self.penalty_ * X[:, self.feature_names_.index("item_log_customers")]
        if self.anchor_:
            pred += self.anchor_ * lead
        return pred

    def _predict(self, X: np.ndarray) -> np.ndarray:
        """The booster's scores of feature rows, from its trees compiled to machine code
        (`compiled_trees`: the same scores to the last bit, ~15x faster on a request's few
        hundred rows); LightGBM's own call where they could not be compiled."""
        trees = self._compiled_trees()
        if trees is not None:
            return trees.predict(X)
        return self._predict_lightgbm(X)

    def _compiled_trees(self) -> CompiledForest | None:
        """The current booster's compiled trees (compiled on first use after a fit; a loaded
        model brings them), or None when this host cannot compile them (logged once)."""
        if getattr(self, "_trees_of", None) is not self.booster_:
            self._compile_trees(lambda: CompiledForest.of_booster(self.booster_))
        return self.trees_

    def _compile_trees(self, compile_) -> CompiledForest | None:
        """`trees_` from `compile_()` for the current booster; None (LightGBM predicts) when
        the trees cannot be compiled on this host."""
        try:
            self.trees_ = compile_()
        except (ImportError, OSError, RuntimeError, ValueError) as exc:
            log.warning("ranker trees not compiled; LightGBM predicts", extra={"error": str(exc)})
            self.trees_ = None
        self._trees_of = self.booster_
        return self.trees_

    def _predict_lightgbm(self, X: np.ndarray) -> np.ndarray:
        """`booster_.predict(X, num_threads=1)` in one LightGBM C call on float32 rows: the
        same scores without the Python wrapper's checks and copies (which cost as much as the
        trees on a request's few hundred candidates); one thread, since an OpenMP team on
        a loaded 2-core server costs more than it saves; the GIL is released in the call."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        n, m = X.shape
        out = np.empty(n, np.float64)
        got = ctypes.c_int64()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMat(
                self.booster_._handle,
                X.ctypes.data_as(ctypes.c_void_p),
                ctypes.c_int(_FLOAT32),
                ctypes.c_int32(n),
                ctypes.c_int32(m),
                ctypes.c_int(_ROW_MAJOR),
                ctypes.c_int(_PREDICT_NORMAL),
                ctypes.c_int(0),  # from the first iteration
                ctypes.c_int(self.booster_.best_iteration),  # as Booster.predict: <= 0 is all
                _ONE_THREAD,
                ctypes.byref(got),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        if got.value != n:
            raise DataError(f"the ranker's booster returned {got.value} scores for {n} rows")
        return out

    def _each(self, score) -> list:
        """`score(generator)` of every generator (of the gated one only when the gate is
        closed: the others are not computed)."""
        fb = self.fallback_
        return [score(g) if fb is None or i == fb else None for i, g in enumerate(self.generators)]

    def _known(self, rows: np.ndarray, gen_scores) -> np.ndarray:
        profiles = [self.state_.profile(int(r)) for r in rows]
        hidden = [
            self._bought_indices[self._bought_indptr[r] : self._bought_indptr[r + 1]] for r in rows
        ]
        return self._rank(gen_scores, profiles, hidden)

    def _scores_known(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        return self._known(rows, self._each(lambda g: g._scores_known(rows)))

    def _score_one(self, row: int) -> np.ndarray:
        hidden = self._bought_indices[self._bought_indptr[row] : self._bought_indptr[row + 1]]
        gens = self._each(lambda g: g._score_one(row))
        return self._rank_one(gens, self.state_.profile(row), hidden)

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
        return self._rank(self._each(lambda g: g._scores_items(X)), profiles, hidden)

    def _score_weights(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """A session's or a new visitor's scores, computed per request (NumPy and LightGBM)."""
        profile = CustomerProfile.session(items, weights, self.state_.as_of_days)
        gens = self._each(lambda g: g._score_weights(items, weights))
        return self._rank_one(gens, profile, items)

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
            "anchor": self.anchor_,
            "start": self.start_,
            "candidate_recall": self.candidate_recall_,
            "validation": self.validation_,
            "fallback": self.fallback_,
        }

    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {f"{STATE_PREFIX}{k}": v for k, v in self.state_.arrays().items()}

    def _set_model_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(STATE_PREFIX)
        self.state_ = RankingState.from_arrays({k[n:]: v for k, v in arrays.items()})

    def _save_files(self, path: Path) -> None:
        super()._save_files(path)
        self.booster_.save_model(str(path / BOOSTER_FILE))
        trees = self._compiled_trees()
        if trees is not None:  # the compiled trees travel with the model (reused on this CPU)
            trees.save(path)

    @classmethod
    def _init_params(cls, params: dict[str, Any], path: Path) -> dict[str, Any]:
        rest = {k: v for k, v in params.items() if k != "n_parts"}
        for name in ("penalties", "anchors"):
            if name in rest:
                rest[name] = tuple(rest[name])
        return {"generators": cls._load_parts(params, path), **rest}

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> None:
        self.generator_names_ = meta["generator_names"]
        self.feature_names_ = meta["feature_names"]
        self.rounds_ = meta["rounds"]
        self.penalty_ = meta["penalty"]
        self.anchor_ = meta.get("anchor", 0.0)
        self.start_ = meta["start"]
        self.candidate_recall_ = meta["candidate_recall"]
        self.validation_ = meta["validation"]
        self.fallback_ = meta.get("fallback")
        self.booster_ = lgb.Booster(model_file=str(path / BOOSTER_FILE))
        text = self.booster_.model_to_string()
        self._compile_trees(lambda: CompiledForest.load(path, text))
        super()._restore(meta, arrays, path)


def _outside(lead: np.ndarray) -> np.ndarray:
    """(n, n_items) float32: `LOW` + each row's z-score of the first generator (clipped to
    +-50), the order of the products outside the candidates; in place, one array."""
    out = zscore_rows(lead)
    np.minimum(out, _CLIP, out=out)  # np.clip's values (NaN kept), without its wrapper
    np.maximum(out, -_CLIP, out=out)
    out += LOW
    return out


def training_groups(
    ranker, gens, state: RankingState, purchased, labels: sp.csr_matrix, block=512, keep_all=False
) -> tuple[Groups, dict[str, float]]:
    """The ranker's groups: one per customer with history and at least one relevant candidate
    (`keep_all`: with at least one label); and candidate recall per generator and for the
    union (mean share of each labelled customer's relevant products among them)."""
    n_rel = np.diff(labels.indptr)
    has_history = np.diff(state.weights.indptr) > 0
    rows = np.flatnonzero((n_rel > 0) & has_history)
    names = generator_names(ranker.generators)
    hits = {name: 0.0 for name in [*names, "union"]}
    X, y, sizes, items, totals = [], [], [], [], []
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
            if keep_all or rel.any():
                X.append(
                    rank_features(
                        state, state.profile(r), c.items, c.scores, c.ranks, state.as_of_days
                    )
                )
                y.append(rel.astype(np.float32))
                sizes.append(len(c.items))
                items.append(c.items)
                totals.append(int(total))
    recall = {name: round(float(h / max(len(rows), 1)), 4) for name, h in hits.items()}
    n_items = labels.shape[1]
    if not sizes:
        empty = np.zeros((0, len(ranker.feature_names_)), np.float32)
        return Groups(empty, np.zeros(0, np.float32), [], [], [], n_items), recall
    return Groups(np.vstack(X), np.concatenate(y), sizes, items, totals, n_items), recall


def _ndcg(order_scores: np.ndarray, rel: np.ndarray, k: int, total: int) -> float:
    """nDCG@k of one group ranked by `order_scores` (higher first); `total` relevant products
    in all (those outside the group count in the ideal, as in the test's metric)."""
    top = np.argsort(-order_scores, kind="stable")[:k]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((rel[top] * disc[: len(top)]).sum())
    ideal = float(disc[: min(total, k)].sum())
    return dcg / ideal if ideal else 0.0


def _held_out(ranker, booster, valid: Groups) -> tuple[tuple[float, float], dict[str, Any]]:
    """On the validation groups: the mix of the ranker's score with a popularity penalty
    (`ranker.penalties`) and the first generator's z-score (`ranker.anchors`), both in units
    of the ranker score's spread, with the best nDCG@k whose catalog coverage is at least the
    first generator's on the same customers (the ranker may not narrow the catalog below the
    model it re-ranks; when no mix does, the widest among those with at least the first
    generator's nDCG, else the best nDCG), and that nDCG beside each generator's own order;
    `ranker.min_coverage`, when set, is the catalog coverage asked instead of the first
    generator's. Returns ((penalty per unit of item_log_customers, anchor per unit of the
    lead's z-score), report)."""
    k = ranker.eval_k
    X, rel = valid.X, valid.y
    pred = booster.predict(X, num_iteration=booster.best_iteration)
    pred = pred + ranker.start_ * X[:, 0]
    pop = X[:, ranker.feature_names_.index("item_log_customers")]
    spread = float(np.std(pred)) or 1.0
    cuts = np.concatenate([[0], np.cumsum(valid.sizes)])
    cand = np.concatenate(valid.items)

    def judge(order_scores):
        ndcg, shown = 0.0, set()
        for j, total in enumerate(valid.totals):
            lo, hi = cuts[j], cuts[j + 1]
            ndcg += _ndcg(order_scores[lo:hi], rel[lo:hi], k, total)
            top = np.argsort(-order_scores[lo:hi], kind="stable")[:k]
            shown.update(cand[lo:hi][top].tolist())
        return ndcg / len(valid.sizes), len(shown) / max(valid.n_items, 1)

    per, lead_coverage = {}, 0.0
    for g, name in enumerate(ranker.generator_names_):
        per[name], coverage = judge(-X[:, 2 * g + 1])
        lead_coverage = coverage if g == 0 else lead_coverage
    lead_ndcg = per[ranker.generator_names_[0]]
    asked = lead_coverage if ranker.min_coverage is None else ranker.min_coverage
    mixes = [(lam, mu) for mu in ranker.anchors for lam in ranker.penalties]
    tried = {m: judge(pred + spread * (m[1] * X[:, 0] - m[0] * pop)) for m in mixes}
    wide = [m for m in mixes if tried[m][1] >= asked]
    if wide:
        chosen = max(wide, key=lambda m: (tried[m][0], -m[1], -m[0]))
    else:
        good = [m for m in mixes if tried[m][0] >= lead_ndcg]
        chosen = (
            max(good, key=lambda m: (tried[m][1], tried[m][0], -m[1], -m[0]))
            if good
            else (max(mixes, key=lambda m: (tried[m][0], -m[1], -m[0])))
        )
    best = max(per, key=per.get)
    ndcg = tried[chosen][0]
    report = {
        "k": k,
        "ndcg": round(float(ndcg), 4),
        f"coverage@{k}": round(tried[chosen][1], 4),
        "generators_ndcg": {name: round(v, 4) for name, v in per.items()},
        "best_generator": best,
        "lift": round(float(ndcg / per[best] - 1.0), 4) if per[best] > 0 else None,
        "popularity_penalty": chosen[0],
        "lead_anchor": chosen[1],
        "mixes_tried": {
            f"penalty={lam:g},anchor={mu:g}": {"ndcg": round(v[0], 4), "coverage": round(v[1], 4)}
            for (lam, mu), v in tried.items()
        },
        "lead_coverage": round(lead_coverage, 4),
        "coverage_asked": round(asked, 4),
        "customers": len(valid.sizes),
    }
    return (chosen[0] * spread, chosen[1] * spread), report
