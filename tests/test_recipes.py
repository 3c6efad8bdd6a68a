import numpy as np
import pytest

from frameqc.runtime.data.binning import median_bin
from frameqc.runtime.data.reader import FITS, JPEG, PNG, Frame
from frameqc.runtime.data.synthetic import make_frame
from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.model.recipes import (
    AsinhRecipe,
    RGBRecipe,
    asinh_stretch,
    centre_crop,
    make_recipe,
    parse_binning,
    to_uint16,
)


def numpy1_stretch(img: np.ndarray) -> np.ndarray:
    """The seed's lines as numpy 1 ran them: float64 percentiles, cast down to float32."""
    a = np.arcsinh(img.astype(np.float32))
    black, white = np.percentile(a.astype(np.float64), 0.1), np.percentile(a.astype(np.float64), 99)
    out = (np.clip(a, np.float32(black), np.float32(white)) - np.float32(black)) \
        * np.float32(255 / (white - black))
    assert out.dtype == np.float32
    return out.astype(np.uint8)


def test_stretch_is_numpy1_float32_arithmetic():
    """Bit-exact with numpy 1's float32 arithmetic, on frames where float64 would differ."""
    differs = 0
    for seed in (0, 2, 9, 10):
        img = median_bin(make_frame(("good", "shutter", "wobble")[seed % 3], 2048, seed), 9)
        img = img.astype(np.uint16)
        ours = asinh_stretch(img)
        np.testing.assert_array_equal(ours, numpy1_stretch(img))
        a = np.arcsinh(img).astype(np.float64)  # numpy 2's default: float64 throughout
        black, white = np.percentile(a, 0.1), np.percentile(a, 99)
        f64 = ((np.clip(a, black, white) - black) * (255 / (white - black))).astype(np.uint8)
        differs += bool((f64 != ours).any())
    assert differs >= 2, "these frames no longer exercise the float32 detail"


def test_to_uint16_clips_and_fills_non_finite():
    data = np.array([[-5.0, 70000.0], [np.nan, 12.7]])
    np.testing.assert_array_equal(to_uint16(data), [[0, 65535], [12, 12]])
    with pytest.raises(FrameError, match="no finite pixel"):
        to_uint16(np.full((2, 2), np.nan))


def test_centre_crop_offsets_floor():
    plane = np.arange(227 * 229).reshape(227, 229)
    crop = centre_crop(plane, 224)
    assert crop.shape == (224, 224)
    assert crop[0, 0] == plane[1, 2]  # top = (227-224)//2 = 1, left = (229-224)//2 = 2


def test_asinh_prepare_shape_and_values():
    prepared = AsinhRecipe().prepare(Frame(FITS, make_frame("good", 2048, 0)))
    t = prepared.tensor
    assert t.shape == (3, 224, 224) and t.dtype == np.float32
    assert np.array_equal(t[0], t[1]) and np.array_equal(t[0], t[2])
    assert t.min() >= 0.0 and t.max() <= 1.0
    np.testing.assert_array_equal(t[0] * 255, np.rint(t[0] * 255))
    assert set(prepared.timings) == {"bin", "prepare"}
    assert prepared.preview().shape == (224, 224)


def test_asinh_refusals():
    recipe = AsinhRecipe()
    with pytest.raises(FrameError, match="100x100 after binning"):
        recipe.prepare(Frame(FITS, make_frame("good", 100, 0)))
    with pytest.raises(FrameError, match="flat frame"):
        recipe.prepare(Frame(FITS, np.full((300, 300), 7, np.uint16)))
    with pytest.raises(FrameError, match="PNG file cannot go to a model whose recipe 'asinh'"):
        recipe.prepare(Frame(PNG, np.zeros((224, 224, 3), np.uint8)))
    with pytest.raises(FrameError, match="after binning"):
        AsinhRecipe(binning=20).prepare(Frame(FITS, make_frame("good", 2048, 0)))


def test_rgb_recipe():
    rgb = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    t = RGBRecipe().prepare(Frame(JPEG, rgb)).tensor
    assert t.shape == (3, 224, 224)
    np.testing.assert_array_equal(t[1], rgb[:, :, 1].astype(np.float32) / np.float32(255))
    with pytest.raises(FrameError, match="image is 300x200"):
        RGBRecipe(size=224).prepare(Frame(PNG, np.zeros((200, 300, 3), np.uint8)))
    with pytest.raises(FrameError, match="FITS file cannot go"):
        RGBRecipe().prepare(Frame(FITS, np.zeros((224, 224))))


def test_make_recipe_and_binning_values():
    r = make_recipe({"name": "asinh", "binning": "auto", "black_percentile": 0.1,
                     "white_percentile": 99.0}, 224, binning=3)
    assert isinstance(r, AsinhRecipe) and r.binning == 3
    assert make_recipe(r.params()) == AsinhRecipe(binning=3)
    assert isinstance(make_recipe({"name": "rgb"}), RGBRecipe)
    assert parse_binning("none") == "none" and parse_binning("9") == 9
    for bad in ("0", "x", "-3"):
        with pytest.raises(UsageError):
            parse_binning(bad)
    with pytest.raises(UsageError, match="unknown recipe"):
        make_recipe({"name": "sqrt"})


def test_a_new_recipe_is_its_module_and_registration(monkeypatch, tmp_path):
    """One registered class is all the card, seen/, calibration and export --help need."""
    from dataclasses import dataclass
    from typing import ClassVar

    from frameqc.export.calibration import synthetic_tensors
    from frameqc.runtime.lifecycle.seen import preview, recipes_for
    from frameqc.runtime.model.card import ModelCard
    from frameqc.runtime.model.recipes import base, register

    from helpers import run_cli

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))

    @register
    @dataclass(frozen=True)
    class SqrtRecipe(AsinhRecipe):
        name: ClassVar[str] = "sqrt"
        help: ClassVar[str] = "FITS, square root"
        gain: float = 2.0

    card = ModelCard(labels=("a", "b"), recipe={"name": "sqrt", "gain": 3.0})
    recipe = make_recipe(card.recipe, card.input_size)
    assert isinstance(recipe, SqrtRecipe) and recipe.gain == 3.0
    assert recipe.params() == {"name": "sqrt", "binning": "auto", "black_percentile": 0.1,
                               "white_percentile": 99.0, "gain": 3.0}
    assert [type(r) for r in recipes_for(None)] == [AsinhRecipe, RGBRecipe, SqrtRecipe]
    assert [type(r) for r in recipes_for(card)] == [SqrtRecipe]
    assert len(synthetic_tensors(recipe, 2)) == 2
    write = tmp_path / "f.fits"
    from frameqc.runtime.data.synthetic import write_fits

    write_fits(write, make_frame("good", 681, 0))
    assert preview(str(write), recipes_for(card)).shape == (224, 224)
    code, out, _ = run_cli("export", "--help")
    assert code == 0 and "sqrt (FITS, square root)" in " ".join(out.split())
    assert "{asinh,rgb,sqrt}" in out
    with pytest.raises(UsageError, match="unknown recipe 'cube'; known: asinh, rgb, sqrt"):
        ModelCard(labels=("a", "b"), recipe={"name": "cube"})


def test_export_help_is_unchanged():
    from helpers import run_cli

    code, out, _ = run_cli("export", "--help")
    assert code == 0
    assert "preparation: asinh (FITS, default) or rgb (JPEG/PNG)" in " ".join(out.split())
