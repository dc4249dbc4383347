"""Batch recommendation export (`training.export`, `shopml recommend export`): every known
customer's filtered top-k in fixed customer blocks, the same bytes on the local engine and on a
LocalCluster of two workers, never half-written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.generator import GeneratorConfig, generate
from features.interactions import InteractionConfig, build_matrix, events_frame
from models.recommenders import ALSRecommender, EASERecommender, FallbackRecommender
from models.recommenders.popularity import PopularityRecommender
from models.recommenders.selection import RecommendFilters
from shopml.errors import ShopmlError, UnknownEntity
from training.export import MANIFEST, export_recommendations, part_name, read_export

pytest_plugins = ["dask_cluster"]  # one cluster per session, whichever module asks first


@pytest.fixture(scope="module")
def store():
    return generate(GeneratorConfig(scale="tiny", seed=0))


@pytest.fixture(scope="module")
def model(store):
    matrix = build_matrix(events_frame(store), InteractionConfig())
    chain = FallbackRecommender(EASERecommender(l2=50.0), PopularityRecommender(mode="trending"))
    return chain.fit(matrix, store.products).precompute(30)


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_export_writes_every_customer_top_k_as_recommend_answers(model, tmp_path):
    out = tmp_path / "campaign"
    result = export_recommendations(model, out, k=10, block_customers=100)
    n = len(model.customer_ids_)
    assert result.customers == n and result.files == -(-n // 100)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([MANIFEST] + [part_name(i) for i in range(result.files)])
    rows = read_export(out)
    assert list(rows.columns) == ["customer_id", "rank", "product_id", "score"]
    assert len(rows) == result.rows and rows["customer_id"].nunique() == n
    for customer in model.customer_ids_[[0, n // 2, n - 1]]:
        mine = rows[rows["customer_id"] == customer].sort_values("rank")
        expected = model.recommend_one(customer, k=10)
        assert mine["product_id"].tolist() == list(expected.product_ids)
        np.testing.assert_array_equal(mine["score"].to_numpy(), expected.scores)
        assert mine["rank"].tolist() == list(range(1, len(mine) + 1))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["customers"] == n and manifest["k"] == 10
    assert sum(f["rows"] for f in manifest["files"]) == len(rows)


def test_filters_apply_to_every_row(model, store, tmp_path):
    seen = model.user_items_
    category = str(store.products["category"].iloc[0])
    filters = RecommendFilters(exclude_seen=True, categories=(category,))
    export_recommendations(model, tmp_path / "f", k=5, filters=filters, block_customers=64)
    rows = read_export(tmp_path / "f")
    cats = store.products.set_index("product_id")["category"].astype(str)
    assert len(rows) and (cats.reindex(rows["product_id"]).to_numpy() == category).all()
    rows_of = {c: i for i, c in enumerate(model.customer_ids_)}
    col_of = {p: i for i, p in enumerate(model.product_ids_)}
    r = rows["customer_id"].map(rows_of).to_numpy()
    c = rows["product_id"].map(col_of).to_numpy()
    assert np.asarray(seen[r, c]).ravel().sum() == 0  # nothing the customer interacted with


def test_dask_export_writes_the_same_bytes(model, tmp_path, dask_compute):
    local = export_recommendations(model, tmp_path / "local", k=20, block_customers=37)
    dask = export_recommendations(
        model, tmp_path / "dask", k=20, block_customers=37, compute=dask_compute
    )
    assert dask.engine == "dask" and local.engine == "local"
    assert local.files > dask_compute.n_partitions  # more blocks than workers: a bounded window
    assert _files(tmp_path / "local") == _files(tmp_path / "dask")


def test_factor_model_export_is_identical_on_both_engines(store, tmp_path, dask_compute):
    matrix = build_matrix(events_frame(store), InteractionConfig())
    als = ALSRecommender(factors=8, iterations=3).fit(matrix, store.products)
    filters = RecommendFilters(exclude_purchased=False, only_available=True)
    export_recommendations(als, tmp_path / "a", k=7, filters=filters, block_customers=50)
    export_recommendations(
        als, tmp_path / "b", k=7, filters=filters, block_customers=50, compute=dask_compute
    )
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_an_existing_folder_is_kept_unless_forced(model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ShopmlError, match="exists; pass --force"):
        export_recommendations(model, out, k=3)
    assert (out / "keep.txt").read_text() == "mine"
    export_recommendations(model, out, k=3, force=True, block_customers=1000)
    assert not (out / "keep.txt").exists() and (out / part_name(0)).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial or old folder left


def test_bad_filters_fail_before_anything_is_written(model, tmp_path):
    with pytest.raises(UnknownEntity, match="no-such-category"):
        export_recommendations(
            model, tmp_path / "x", filters=RecommendFilters(categories=("no-such-category",))
        )
    with pytest.raises(ValueError, match="k must be a positive integer"):
        export_recommendations(model, tmp_path / "x", k=0)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_block_leaves_no_folder(model, tmp_path, monkeypatch):
    import training.export as export

    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args)

    real = export.block_parquet
    monkeypatch.setattr(export, "block_parquet", failing)
    with pytest.raises(OSError, match="disk full"):
        export_recommendations(model, tmp_path / "out", k=3, block_customers=50)
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_an_existing_folder_with_a_message(tmp_path, capsys, monkeypatch):
    from cli.main import main

    out = tmp_path / "o"
    out.mkdir()
    monkeypatch.setenv("SHOPML_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("sys.argv", ["shopml", "recommend", "export", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: --out" in err and "pass --force" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_read_export_round_trips_frame_types(model, tmp_path):
    export_recommendations(model, tmp_path / "t", k=2, block_customers=500)
    rows = read_export(tmp_path / "t")
    assert rows["rank"].dtype == np.int16 and rows["score"].dtype == np.float32
    assert pd.api.types.is_string_dtype(rows["customer_id"])
