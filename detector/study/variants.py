"""The variants of the loss study, named so that the name is the setting.

A variant changes only the classification loss and the classifier's bias init; everything else
(seed, data, schedule, budget, model) is the study's. Names:

| name                 | loss                                   | prior init (pi = 0.01) |
|----------------------|----------------------------------------|------------------------|
| `ce_no_prior`        | plain CE                               | no (bias 0, p = 0.5)   |
| `ce_prior`           | plain CE                               | yes                    |
| `alpha_ce_a{A}`      | alpha-balanced CE, alpha A             | yes                    |
| `focal_g{G}_a{A}`    | focal loss, gamma G, alpha A ("none")  | yes                    |
| `focal_g{G}`         | focal loss, alpha = the paper's best for G (Table 1b) | yes     |
| `ohem_1to{R}`        | plain CE on positives + R x as many hardest negatives per image | yes |
| `sampling_free`      | plain CE, guided loss scaling (Sampling-Free, Chen et al. 2019) | from the data |

`sampling_free` is the plain CE of Chen et al.'s "Is Heuristic Sampling Necessary in Training
Deep Object Detectors?": the classifier bias from the measured foreground fraction (the study's
`foreground_prior`: positive (anchor, class) terms over all terms) and the classification loss
rescaled to the box loss's value every step (RetinaNetConfig.guided_loss_scaling).

gamma = 0 focal loss is alpha-balanced CE: `focal_g0_a0.75` and `alpha_ce_a0.75` train the same
model (the paper's Table 1b lists its gamma = 0 row from Table 1a).

Anything that departs from the study's recipe is a labelled row, a suffix after `+`:
`+clip{V}` (gradient clipping at norm V), `+lr{V}` (base lr V at the reference batch instead of
the study's), `+noprior` (bias 0), `+seed{S}` (seed_everything S instead of the study's: the same
recipe, another draw). E.g. `focal_g2_a0.25+clip10`, `ce_no_prior+lr1e30`, `ce_prior+lr0.002+seed1`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PRIOR_PROB = 0.01

#: The paper's best alpha for each gamma (Table 1b).
PAPER_ALPHA_FOR_GAMMA: dict[float, float] = {0.0: 0.75, 0.1: 0.75, 0.2: 0.75, 0.5: 0.5, 1.0: 0.25, 2.0: 0.25, 5.0: 0.25}

#: The paper's Table 1 (ResNet-50-FPN, 600 px, COCO minival, AP in percent), for comparison.
PAPER_AP_ALPHA_CE: dict[float, float] = {0.10: 0.0, 0.25: 10.8, 0.50: 30.2, 0.75: 31.1, 0.90: 30.8, 0.99: 28.7,
                                         0.999: 25.1}
PAPER_AP_FOCAL: dict[float, float] = {0.0: 31.1, 0.1: 31.4, 0.2: 31.9, 0.5: 32.9, 1.0: 33.7, 2.0: 34.0, 5.0: 32.2}

#: Every variant the paper's Table 1 has a counterpart for (what `--variants all` runs).
ALL_VARIANTS: tuple[str, ...] = (
    "ce_no_prior", "ce_prior",
    "alpha_ce_a0.1", "alpha_ce_a0.25", "alpha_ce_a0.5", "alpha_ce_a0.9", "alpha_ce_a0.99", "alpha_ce_a0.999",
    "focal_g0_a0.75", "focal_g0.1_a0.75", "focal_g0.2_a0.75", "focal_g0.5_a0.5", "focal_g1_a0.25",
    "focal_g2_a0.25", "focal_g5_a0.25",
    "ohem_1to3",
)  # fmt: skip


class VariantError(ValueError):
    """A variant name that does not follow the grammar above."""


@dataclass(frozen=True)
class Variant:
    """One row of the study: the loss settings a name stands for.

    Attributes:
        name: the canonical name (`focal_g0.5` becomes `focal_g0.5_a0.5`).
        cls_loss: "ce", "focal" or "ohem" (RetinaNetConfig.cls_loss).
        gamma: the focusing parameter (0 for ce and ohem).
        alpha: the positives' weight, or None.
        prior_prob: the classifier bias init (None: bias 0).
        ohem_ratio: negatives per positive with OHEM.
        clip: gradient clipping norm (a labelled departure from the recipe), or None.
        lr: base learning rate replacing the study's (a labelled departure), or None.
        guided: Sampling-Free's guided loss scaling.
        prior_from_data: the bias init comes from the study's measured foreground fraction.
        seed: seed_everything replacing the study's, or None.
    """

    name: str
    cls_loss: str
    gamma: float = 0.0
    alpha: float | None = None
    prior_prob: float | None = PRIOR_PROB
    ohem_ratio: float = 3.0
    clip: float | None = None
    lr: float | None = None
    guided: bool = False
    prior_from_data: bool = False
    seed: int | None = None
    modifiers: tuple[str, ...] = field(default=(), compare=False)

    @property
    def prior_init(self) -> bool:
        return self.prior_prob is not None or self.prior_from_data

    @property
    def base_name(self) -> str:
        return self.name.split("+")[0]

    def detector_settings(self) -> dict[str, Any]:
        """The `model.detector` keys this variant sets."""
        settings: dict[str, Any] = {"cls_loss": self.cls_loss, "gamma": self.gamma, "alpha": self.alpha,
                                    "prior_prob": self.prior_prob}
        if self.cls_loss == "ohem":
            settings["ohem_neg_pos_ratio"] = self.ohem_ratio
        if self.guided:
            settings["guided_loss_scaling"] = True
        return settings

    def paper_ap(self) -> float | None:
        """The paper's Table 1 AP (percent) for the same loss settings, when it has one."""
        if self.modifiers or not self.prior_init or self.guided:
            return None
        if self.cls_loss == "ce" and self.alpha is None:
            return PAPER_AP_ALPHA_CE[0.5]  # plain CE = 2 x (alpha 0.5 CE); the paper reports them as one row
        if self.cls_loss == "ce" or (self.cls_loss == "focal" and self.gamma == 0):
            return PAPER_AP_ALPHA_CE.get(self.alpha)
        if self.cls_loss == "focal" and PAPER_ALPHA_FOR_GAMMA.get(self.gamma) == self.alpha:
            return PAPER_AP_FOCAL[self.gamma]
        return None

    def row(self) -> dict[str, Any]:
        """The descriptive columns of the results table."""
        loss = "sampling_free" if self.guided else self.cls_loss
        return {"variant": self.name, "loss": loss, "gamma": self.gamma, "alpha": self.alpha,
                "prior_init": self.prior_init}


_NUM = r"(\d+(?:\.\d*)?(?:e[-+]?\d+)?)"
_PATTERNS = {
    "ce_no_prior": re.compile(r"ce_no_prior"),
    "ce_prior": re.compile(r"ce_prior"),
    "alpha_ce": re.compile(rf"alpha_ce_a{_NUM}"),
    "focal": re.compile(rf"focal_g{_NUM}(?:_a({_NUM[1:-1]}|none))?"),
    "ohem": re.compile(rf"ohem_1to{_NUM}"),
    "sampling_free": re.compile(r"sampling_free"),
}


def _fmt(x: float) -> str:
    """0.5 -> '0.5', 2.0 -> '2', 1e30 -> '1e30': short, reads back equal, never holds a '+'."""
    text = f"{x:g}" if float(f"{x:g}") == x else repr(x)
    return text.replace("e+", "e")


def parse_variant(name: str) -> Variant:
    """The Variant a name stands for (see the module doc); raises VariantError."""
    base, *mods = name.strip().split("+")
    fields: dict[str, Any]
    if _PATTERNS["ce_no_prior"].fullmatch(base):
        fields = {"cls_loss": "ce", "prior_prob": None}
        canonical = "ce_no_prior"
    elif _PATTERNS["ce_prior"].fullmatch(base):
        fields = {"cls_loss": "ce"}
        canonical = "ce_prior"
    elif m := _PATTERNS["alpha_ce"].fullmatch(base):
        alpha = _alpha(m.group(1), name)
        fields = {"cls_loss": "ce", "alpha": alpha}
        canonical = f"alpha_ce_a{_fmt(alpha)}"
    elif m := _PATTERNS["focal"].fullmatch(base):
        gamma = float(m.group(1))
        if m.group(2) is None:
            if gamma not in PAPER_ALPHA_FOR_GAMMA:
                known = ", ".join(_fmt(g) for g in PAPER_ALPHA_FOR_GAMMA)
                raise VariantError(f"{name}: the paper gives a best alpha only for gamma in {{{known}}}; "
                                   f"name one, e.g. focal_g{_fmt(gamma)}_a0.25")
            alpha = PAPER_ALPHA_FOR_GAMMA[gamma]
        else:
            alpha = None if m.group(2) == "none" else _alpha(m.group(2), name)
        fields = {"cls_loss": "focal", "gamma": gamma, "alpha": alpha}
        canonical = f"focal_g{_fmt(gamma)}_a{'none' if alpha is None else _fmt(alpha)}"
    elif _PATTERNS["sampling_free"].fullmatch(base):
        fields = {"cls_loss": "ce", "guided": True, "prior_prob": None, "prior_from_data": True}
        canonical = "sampling_free"
    elif m := _PATTERNS["ohem"].fullmatch(base):
        ratio = float(m.group(1))
        if ratio <= 0:
            raise VariantError(f"{name}: the OHEM ratio must be positive")
        fields = {"cls_loss": "ohem", "ohem_ratio": ratio}
        canonical = f"ohem_1to{_fmt(ratio)}"
    else:
        raise VariantError(
            f"unknown variant {name!r}: expected ce_no_prior, ce_prior, alpha_ce_a<A>, focal_g<G>[_a<A>|_anone], "
            "ohem_1to<R> or sampling_free, optionally followed by +clip<V>, +lr<V>, +noprior, +seed<S>"
        )
    canon_mods = []
    for mod in mods:
        if m := re.fullmatch(rf"clip{_NUM}", mod):
            fields["clip"] = float(m.group(1))
            canon_mods.append(f"clip{_fmt(fields['clip'])}")
        elif m := re.fullmatch(rf"lr{_NUM}", mod):
            fields["lr"] = float(m.group(1))
            canon_mods.append(f"lr{_fmt(fields['lr'])}")
        elif mod == "noprior":
            fields["prior_prob"] = None
            fields["prior_from_data"] = False
            canon_mods.append("noprior")
        elif m := re.fullmatch(r"seed(\d+)", mod):
            fields["seed"] = int(m.group(1))
            canon_mods.append(f"seed{fields['seed']}")
        else:
            raise VariantError(f"{name}: unknown modifier +{mod} (known: +clip<V>, +lr<V>, +noprior, +seed<S>)")
    canonical = "+".join([canonical, *canon_mods])
    return Variant(name=canonical, modifiers=tuple(canon_mods), **fields)


def _alpha(text: str, name: str) -> float:
    alpha = float(text)
    if not 0.0 <= alpha <= 1.0:
        raise VariantError(f"{name}: alpha must be in [0, 1], got {text}")
    return alpha


def parse_variants(names: str | list[str]) -> list[Variant]:
    """Variants from a comma-separated string or a list; "all" expands to ALL_VARIANTS.

    Duplicates (after canonicalisation) are refused: each variant is one row.
    """
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    expanded: list[str] = []
    for n in names:
        expanded.extend(ALL_VARIANTS if n.strip() == "all" else [n])
    variants = [parse_variant(n) for n in expanded]
    seen: set[str] = set()
    for v in variants:
        if v.name in seen:
            raise VariantError(f"variant {v.name} is listed twice")
        seen.add(v.name)
    if not variants:
        raise VariantError("no variant given")
    return variants
