"""SourceConfig and load_source: every kind, the generated-store cache, config errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pydantic import ValidationError

from features.sources import GENERATOR_CONFIG, SourceConfig, generated_dir, load_source
from features.store import Store
from shopml.config import load_config
from shopml.errors import ConfigError, DataError
from shopml.settings import load_settings


def _store() -> Store:
    return Store(
        products=pd.DataFrame({"product_id": [1, 2], "category": ["a", "b"], "price": [1.0, 2.0]}),
        interactions=pd.DataFrame(
            {
                "customer_id": ["c1", "c2"],
                "product_id": ["1", "2"],
                "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"]),
                "event": ["view", "purchase"],
                "quantity": [1, 1],
            }
        ),
        name="two",
    ).validated()


def test_generated_is_cached_and_reused(tmp_shopml_home, monkeypatch):
    import features.generator as generator

    cfg = SourceConfig(kind="generated", scale="tiny", seed=3)
    first = load_source(cfg)
    folder = generated_dir("tiny", 3, load_settings())
    assert (folder / "interactions.parquet").is_file()
    assert folder.is_relative_to(tmp_shopml_home)
    assert first.customers is not None and first.payments is not None

    def fail(*args, **kwargs):
        raise AssertionError("the cached store should have been reused")

    monkeypatch.setattr(generator, "generate", fail)
    again = load_source(cfg)
    assert again.fingerprint() == first.fingerprint()
    assert len(again.promotions) > 0 and len(again.prices) == len(again.products)


def test_a_cache_from_an_older_generator_is_made_again(tmp_shopml_home):
    """A store cached before the generator published promotions is regenerated, not reused."""
    cfg = SourceConfig(kind="generated", scale="tiny", seed=4)
    load_source(cfg)
    folder = generated_dir("tiny", 4, load_settings())
    meta = json.loads((folder / GENERATOR_CONFIG).read_text())
    (folder / GENERATOR_CONFIG).write_text(json.dumps(meta | {"generator_version": 1}))
    (folder / "promotions.parquet").unlink()
    again = load_source(cfg)
    assert again.promotions is not None and (folder / "promotions.parquet").is_file()


def test_store_files_and_sql_kinds(tmp_path):
    from features.loaders import files

    store = _store()
    store.write(tmp_path / "st")
    assert load_source(SourceConfig(kind="store", path=tmp_path / "st")).row_counts() == {
        "products": 2,
        "interactions": 2,
    }
    files.save(store, tmp_path / "csv", fmt="csv")
    (tmp_path / "csv" / "products.csv").write_text("sku,category,price\n1,a,1.0\n2,b,2.0\n")
    cfg = SourceConfig(
        kind="files", path=tmp_path / "csv", columns={"products": {"sku": "product_id"}}, name="x"
    )
    loaded = load_source(cfg)
    assert loaded.name == "x"
    assert loaded.fingerprint() == store.fingerprint()

    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        store.interactions.to_sql("events", conn, index=False)
    engine.dispose()
    cfg = SourceConfig(kind="sql", url=url, queries={"interactions": "SELECT * FROM events"})
    assert load_source(cfg).interactions["customer_id"].tolist() == ["c1", "c2"]
    cfg = SourceConfig(kind="sql", url=url, tables={"interactions": "events"})
    assert len(load_source(cfg).interactions) == 2


def test_real_data_kinds_take_a_path_and_report_missing_files(tmp_path):
    for kind in ("online_retail", "movielens", "fraud_handbook"):
        with pytest.raises(DataError, match="SHOPML_DATASETS"):
            load_source(SourceConfig(kind=kind, path=tmp_path))


def test_fields_must_match_the_kind():
    with pytest.raises(ValidationError, match="does not take \\['url'\\]"):
        SourceConfig(kind="generated", url="sqlite://")
    with pytest.raises(ValidationError, match="needs \\['path'\\]"):
        SourceConfig(kind="files")
    with pytest.raises(ValidationError, match="queries"):
        SourceConfig(kind="sql", url="sqlite://")
    with pytest.raises(ValidationError, match="extra"):
        SourceConfig(kind="generated", colour="red")
    with pytest.raises(ValidationError, match="scale"):
        SourceConfig(kind="generated", scale="huge")
    assert SourceConfig().kind == "generated"
    safe = SourceConfig(kind="sql", url="postgresql://me:pw@db/shop", tables={"payments": "tx"})
    assert "pw" not in safe.describe()


def test_source_config_from_toml(tmp_path):
    from shopml.config import ConfigModel

    class Job(ConfigModel):
        source: SourceConfig = SourceConfig()

    file = tmp_path / "job.toml"
    file.write_text('[source]\nkind = "files"\npath = "data/shop"\n')
    assert load_config(file, Job).source.path.as_posix() == "data/shop"
    file.write_text('[source]\nkind = "movielens"\nscale = "tiny"\n')
    with pytest.raises(ConfigError, match="source"):
        load_config(file, Job)
