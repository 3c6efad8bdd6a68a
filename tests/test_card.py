from pathlib import Path

import pytest

from frameqc.runtime.errors import ModelError, UsageError
from frameqc.runtime.model.card import ModelCard

from helpers import frameqc, one_line

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


# -- model cards ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,match", [
    ('labels = "OK"', "labels must be a list of names"),
    ('labels = ["A", "B"]\nthreshold = "0.6"', "threshold must be a number"),
    ('labels = ["A", "B"]\nthreshold = true', "threshold must be a number"),
    ('labels = ["A", "B"]\nalerts = "A"', "alerts must be a list of names"),
    ('labels = ["A", "B"]\nnotes = 3', "notes must be text"),
    ('labels = ["A", "B"]\nrecipe = "asinh"', "recipe must be a table with a name"),
])
def test_cards_are_checked_as_strictly_as_a_command_line(tmp_path, text, match):
    from frameqc.runtime.model.card import ModelCard

    path = tmp_path / "card.toml"
    path.write_text(text + "\n")
    with pytest.raises(UsageError, match=match):
        ModelCard.from_toml(path)


def test_a_damaged_card_inside_a_model_is_one_line(runtime_model, tmp_path):
    import onnx

    model = onnx.load(str(runtime_model["int8"]), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == "frameqc.threshold":
            prop.value = '"high"'
    onnx.save(model, str(runtime_model["int8"].parent / "damaged.onnx"))
    proc = frameqc("info", str(runtime_model["int8"].parent / "damaged.onnx"))
    assert proc.returncode == 2 and one_line(proc.stderr)
    assert "damaged model card: threshold must be a number" in proc.stderr
