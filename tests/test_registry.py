"""The registry shared by training and serving: models record a family and a kind, never code.

A kind is looked up in the family's table (`models.family`), so metadata naming an import
string such as `features.store:shutil.rmtree` reaches no code, whichever way a model is loaded.
"""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from models.family import FAMILIES
from registry.metadata import FAMILY_KEY, KIND_KEY, OLD_LOADER_KEY, model_kind, model_metadata
from shopml.errors import ConfigError, RegistryError

HOSTILE = "features.store:shutil.rmtree"


@pytest.fixture
def rmtree_calls(monkeypatch) -> list:
    """Every call of shutil.rmtree during the test (there must be none)."""
    calls: list = []
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: calls.append(a))
    return calls


def test_every_family_registers_a_kind_it_can_load():
    for fam in FAMILIES.values():
        assert model_metadata(fam.name) == {FAMILY_KEY: fam.name, KIND_KEY: fam.registered_kind}
        assert callable(fam.loader(fam.registered_kind))


def test_logging_an_unknown_family_or_kind_fails():
    with pytest.raises(ConfigError, match="unknown model family"):
        model_metadata("weather")
    with pytest.raises(RegistryError, match="unknown model kind"):
        model_metadata("fraud", HOSTILE)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({FAMILY_KEY: "fraud", KIND_KEY: HOSTILE}, "unknown model kind"),
        ({FAMILY_KEY: "features.store", KIND_KEY: "engine"}, "family 'features.store'"),
        ({OLD_LOADER_KEY: HOSTILE}, "older shopml"),
        ({FAMILY_KEY: "forecast", KIND_KEY: "forecaster"}, "expected fraud"),
    ],
)
def test_metadata_naming_code_reaches_no_code(metadata, message, rmtree_calls, tmp_path):
    with pytest.raises(RegistryError, match=message) as err:
        model_kind(metadata, "model x", expected="fraud")
    assert "shopml train" in str(err.value)
    assert rmtree_calls == []


def test_a_stored_bentoml_model_with_hostile_metadata_is_not_loaded(rmtree_calls, tmp_path):
    from serving.model_store import load_native

    (tmp_path / "native").mkdir()
    for metadata in ({FAMILY_KEY: "fraud", KIND_KEY: HOSTILE}, {OLD_LOADER_KEY: HOSTILE}):
        stored = SimpleNamespace(
            tag="shopml-fraud:x", path=str(tmp_path), info=SimpleNamespace(metadata=metadata)
        )
        with pytest.raises(RegistryError, match="shopml build"):
            load_native(stored, "fraud")
    assert rmtree_calls == [] and (tmp_path / "native").is_dir()


def test_an_old_pyfunc_wrapper_holding_a_loader_string_is_not_followed(rmtree_calls, tmp_path):
    from training.pyfunc_wrapper import NativeModel

    old = NativeModel.__new__(NativeModel)  # as unpickled from a model logged by shopml 0.1
    old.__dict__.update(loader=HOSTILE, model=None)
    context = SimpleNamespace(artifacts={"native": str(tmp_path)})
    with pytest.raises(RegistryError, match="older shopml"):
        old.load_context(context)
    hostile = NativeModel({FAMILY_KEY: "fraud", KIND_KEY: HOSTILE})
    with pytest.raises(RegistryError, match="unknown model kind"):
        hostile.load_context(context)
    assert rmtree_calls == [] and tmp_path.is_dir()


def test_missing_champion_says_which_command_to_run(tmp_shopml_home):
    from registry.store import fetch

    with pytest.raises(RegistryError) as err:
        fetch("fraud")
    assert "shopml train fraud" in str(err.value) and "shopml promote" in str(err.value)
    with pytest.raises(RegistryError, match="has no @challenger"):
        fetch("forecast", "challenger")
