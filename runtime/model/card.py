"""The model card: everything the runtime must know, stored inside the ONNX file.

The upstream classifier kept class order in the operators' memory (touse1 and touse2 have opposite
orders). frameqc writes it into the model's ``metadata_props`` at export, one key per
field under ``frameqc.``, each a JSON value, readable with onnxruntime alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from frameqc.runtime.errors import ModelError, UsageError
from frameqc.runtime.model.decision import DEFAULT_MARGIN, check_threshold

PREFIX = "frameqc."

Binning = str | int  # "auto", "none" or a box size


#: What ``input_sizes`` may say: one size (``input_size`` square), or any from MIN_SIDE up.
INPUT_SIZES = ("fixed", "any")
#: The smallest side vgg16 takes: five 2x2 max-pools leave a 1x1 feature map at 32 px.
MIN_SIDE = 32


def _default_recipe() -> dict[str, Any]:
    from frameqc.runtime.model.recipes import default_recipe

    return {"name": default_recipe()}


@dataclass(frozen=True)
class ModelCard:
    """What a model means and how to feed it.

    ``labels`` are in output index order. An alert label is only given when its
    probability reaches ``threshold``.
    """

    labels: tuple[str, ...]
    alerts: tuple[str, ...] = ()
    threshold: float = 0.5
    margin: float = DEFAULT_MARGIN  # probabilities moved this far may flip a doubtful decision
    recipe: dict[str, Any] = field(default_factory=_default_recipe)
    input_size: int = 224  # the side it was exported (traced) at
    input_sizes: str = "fixed"  # "fixed": input_size square only; "any": 32 px up, own size
    precision: str = "fp32"
    weights_sha256: str = ""
    weights_name: str = ""
    frameqc_version: str = ""
    exported_at: str = ""
    torch_version: str = ""
    onnx_version: str = ""
    notes: str = ""
    training: dict[str, Any] = field(default_factory=dict)  # what `frameqc train` did
    quantization: dict[str, Any] = field(default_factory=dict)  # int8/bf16 against fp32
    sizes_checked: dict[str, Any] = field(default_factory=dict)  # input sizes each check saw

    def __post_init__(self) -> None:
        """Checked as strictly as a command line: a wrong type is an error, never coerced."""
        for name in ("labels", "alerts"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str)
                                                                 for v in value):
                raise UsageError(f"{name} must be a list of names, not {value!r}")
            object.__setattr__(self, name, tuple(value))
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int) \
                or self.input_size < 1:
            raise UsageError(f"input_size must be a whole number of pixels, not "
                             f"{self.input_size!r}")
        if not isinstance(self.recipe, dict) or not isinstance(self.recipe.get("name"), str):
            raise UsageError(f"recipe must be a table with a name, not {self.recipe!r}")
        from frameqc.runtime.model.recipes import recipe_class  # the registry, light

        recipe = recipe_class(self.recipe["name"])
        if self.input_sizes not in INPUT_SIZES:
            raise UsageError(f"input_sizes must be one of {', '.join(INPUT_SIZES)}, not "
                             f"{self.input_sizes!r}")
        if self.input_sizes == "any" and not recipe.any_size:
            raise UsageError(f"the '{recipe.name}' recipe prepares one size; input_sizes "
                             "cannot be 'any'")
        for name in ("training", "quantization", "sizes_checked"):
            if not isinstance(getattr(self, name), dict):
                raise UsageError(f"{name} must be a table, not {getattr(self, name)!r}")
        for f in fields(self):
            if f.type == "str" and not isinstance(getattr(self, f.name), str):
                raise UsageError(f"{f.name} must be text, not {getattr(self, f.name)!r}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels) \
                or not all(self.labels):
            raise UsageError("labels must be two or more distinct names")
        unknown = [a for a in self.alerts if a not in self.labels]
        if unknown:
            raise UsageError(f"alert label {unknown[0]!r} is not one of the labels "
                             f"{', '.join(self.labels)}")
        check_threshold(self.threshold)
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) \
                or not 0.0 <= self.margin < 0.5:
            raise UsageError(f"margin must be a number in [0, 0.5), not {self.margin!r}")

    def sizes_text(self) -> str:
        """The input sizes the model takes, as ``frameqc info`` says them."""
        if self.input_sizes == "any":
            return (f"any from {MIN_SIDE}x{MIN_SIDE} up to the image pixel limit, at the "
                    "image's own size")
        return f"{self.input_size}x{self.input_size} only"

    @property
    def model_id(self) -> str:
        """Short id of the source weights, as printed in outputs."""
        return self.weights_sha256[:12]

    def with_(self, **changes: Any) -> ModelCard:
        return replace(self, **changes)

    def to_metadata(self) -> dict[str, str]:
        return {PREFIX + k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ModelCard:
        if PREFIX + "labels" not in meta:
            raise ModelError("not a frameqc model (no model card inside): "
                             "export it with 'frameqc export'")
        known = {f.name for f in fields(cls)}
        try:
            values = {k[len(PREFIX):]: json.loads(v) for k, v in meta.items()
                      if k.startswith(PREFIX) and k[len(PREFIX):] in known}
            return cls(**values)
        except (ValueError, TypeError, UsageError) as exc:
            raise ModelError(f"damaged model card: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> ModelCard:
        """A card file (``models/*.toml``): labels, alerts, threshold, recipe, notes."""
        import tomllib
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise UsageError(f"{path}: no such card file") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: not a readable TOML card ({exc})") from None
        allowed = {"labels", "alerts", "threshold", "margin", "recipe", "input_size", "notes"}
        extra = set(data) - allowed
        if extra:
            raise UsageError(f"{path}: unknown card field(s) {', '.join(sorted(extra))}")
        if "labels" not in data:
            raise UsageError(f"{path}: card has no labels")
        return cls(**data)

    def advice(self) -> str:
        """Which jobs this model suits, from what the card measured (for ``frameqc info``)."""
        see = "(docs/performance.md: Choosing fp32, bf16 or int8)"
        if self.precision == "fp32":
            return ("fp32: the trained network's exact probabilities. Cold one-shots skip "
                    "weight prepacking, which makes this the fastest model for cron "
                    "one-shots; int8 and bf16 are faster per frame in batches and the "
                    f"server and use less memory {see}.")
        q = self.quantization
        if not q:
            moved = f"no {self.precision} check recorded"
        else:
            moved = (f"probabilities within mean |dp| {q['mean_abs_dp']:.3f} (max "
                     f"{q['max_abs_dp']:.3f}) of fp32, ")
            judged = q.get("judged", q["held_out"] - q.get("near_threshold", 0))
            if judged:
                moved += (f"decisions agreeing on {q['agreement']:.1%} of {judged} held-out "
                          "frames away from the threshold")
            else:  # every held-out frame was near the threshold: no decision was judged
                moved += (f"judged by probabilities alone (all {q['held_out']} held-out "
                          "frames were near the threshold)")
            if isinstance(q.get("engines"), dict):
                moved += f"; judged on {', '.join(q['engines']) or 'no engine'}"
        if self.precision == "bf16":
            return (f"bf16: {moved}. Runs on OpenVINO on a CPU with bf16 units (AMX or "
                    "AVX-512 bf16): the fastest and closest to fp32 of the reduced models "
                    f"there, for batches, the resident server and archive runs {see}.")
        return (f"int8: {moved}. Best where throughput or memory matters (batches, the "
                "resident server, archive runs); for exact probabilities in cron one-shots "
                f"the fp32 model is as fast cold {see}.")

    def describe(self) -> str:
        """The card as aligned ``key: value`` lines, for ``frameqc info``."""
        rows = asdict(self)
        rows["labels"] = ", ".join(f"{i}={name}" for i, name in enumerate(self.labels))
        rows["alerts"] = ", ".join(self.alerts) or "(none: top class)"
        rows["recipe"] = " ".join(f"{k}={v}" for k, v in self.recipe.items())
        rows["input_sizes"] = self.sizes_text()
        rows["sizes_checked"] = "; ".join(f"{k}: {' '.join(v)}"
                                          for k, v in self.sizes_checked.items())
        for name in ("training", "quantization"):
            rows[name] = " ".join(f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}"
                                  for k, v in getattr(self, name).items())
        width = max(map(len, rows))
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows.items() if v != "")


def parse_binning(value: str | int) -> Binning:
    """``auto``, ``none`` or a positive box size."""
    if isinstance(value, int) or str(value).isdigit():
        n = int(value)
        if n < 1:
            raise UsageError("--bin must be auto, none or a whole number >= 1")
        return n
    if value in ("auto", "none"):
        return value
    raise UsageError(f"--bin must be auto, none or a whole number >= 1, not {value!r}")
