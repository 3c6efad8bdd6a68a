from pathlib import Path

import pytest

from frameqc.runtime.errors import ModelError, UsageError
from frameqc.runtime.model.card import ModelCard

MODELS = Path(__file__).parent.parent / "models"


def test_metadata_round_trip():
    card = ModelCard(labels=("Wobble", "OK"), alerts=("Wobble",), threshold=0.6,
                     recipe={"name": "rgb"}, weights_sha256="ab" * 32, notes="x")
    meta = card.to_metadata()
    assert all(k.startswith("frameqc.") and isinstance(v, str) for k, v in meta.items())
    assert ModelCard.from_metadata(meta) == card
    assert card.model_id == "abababababab"


def test_foreign_metadata_is_refused():
    with pytest.raises(ModelError, match="not a frameqc model"):
        ModelCard.from_metadata({"author": "someone"})
    with pytest.raises(ModelError, match="damaged model card"):
        ModelCard.from_metadata({"frameqc.labels": "[not json"})


@pytest.mark.parametrize("kwargs,message", [
    ({"labels": ("A",)}, "two or more"), ({"labels": ("A", "A")}, "two or more"),
    ({"labels": ("A", "B"), "alerts": ("C",)}, "not one of the labels"),
    ({"labels": ("A", "B"), "threshold": 0}, "threshold"),
    ({"labels": ("A", "B"), "threshold": 1.5}, "threshold"),
])
def test_invalid_cards(kwargs, message):
    with pytest.raises(UsageError, match=message):
        ModelCard(**kwargs)


@pytest.mark.parametrize("name,labels,alerts,threshold,recipe", [
    ("touse1", ("OK", "Shutter"), ("Shutter",), 0.5, "asinh"),
    ("touse2", ("Shutter", "OK"), ("Shutter",), 0.5, "asinh"),
    ("wobble-nll", ("Wobble", "OK"), ("Wobble",), 0.6, "rgb"),
])
def test_known_lt_cards(name, labels, alerts, threshold, recipe):
    card = ModelCard.from_toml(MODELS / f"{name}.toml")
    assert (card.labels, card.alerts, card.threshold, card.recipe["name"]) == \
        (labels, alerts, threshold, recipe)


def test_bad_card_files(tmp_path):
    with pytest.raises(UsageError, match="no such card"):
        ModelCard.from_toml(tmp_path / "none.toml")
    (tmp_path / "a.toml").write_text("labels = [")
    with pytest.raises(UsageError, match="not a readable TOML"):
        ModelCard.from_toml(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('labels = ["A", "B"]\ncolour = "red"\n')
    with pytest.raises(UsageError, match="unknown card field"):
        ModelCard.from_toml(tmp_path / "b.toml")
