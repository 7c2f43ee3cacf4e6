"""The synthetic data a preset names (study.synthetic): generated once, checked against its knobs after.

A study whose data set is the synthetic generator's (detector.data.synthetic) makes it in
data.root before the first variant trains; a folder that already holds data must have been made
with the same knobs (its train.json records them), or the study refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .presets import StudyError

if TYPE_CHECKING:
    from .plan import Study


def prepare_data(study: Study, log: Callable[[str], None] = print) -> None:
    """Generate the preset's synthetic data (study.synthetic) when its folder has none yet.

    An existing folder must have been made with the same knobs (its train.json records them).
    """
    data = study.config["data"]
    knobs = study.settings.get("synthetic")
    if data.get("dataset", "synthetic") != "synthetic" or not knobs:
        return
    from ..data.synthetic import make_synthetic, synthetic_exists

    root = Path(data.get("root", "data/synthetic"))
    if not synthetic_exists(root):
        log(f"[study] generating the synthetic data in {root} ({knobs})")
        try:
            make_synthetic(root, progress=False, **knobs)
        except TypeError as err:  # a knob make_synthetic does not have
            raise StudyError(f"study.synthetic: {err}") from None
        return
    info = json.loads((root / "train.json").read_text(encoding="utf-8")).get("info", {})
    spec = info.get("spec", {})
    expected = {k: v for k, v in knobs.items() if k not in ("num_train", "num_val", "seed")}
    diffs = [f"{k} {spec.get(k)!r} (wanted {v!r})" for k, v in expected.items() if spec.get(k) != v]
    if "seed" in knobs and info.get("seed") != knobs["seed"]:
        diffs.append(f"seed {info.get('seed')!r} (wanted {knobs['seed']!r})")
    if diffs:
        raise StudyError(f"{root} holds synthetic data made with other settings: {', '.join(diffs)}; "
                         "delete it, or point data.root elsewhere")


__all__ = ["prepare_data"]
