"""configs/ablation/gradients.yaml trains what the imbalance lab trains at its medium level (AdamW)."""

from pathlib import Path

import yaml

from detector.study.plan import build_lab

REPO = Path(__file__).resolve().parents[2]


def test_the_gradient_config_is_the_medium_levels_ce_run():
    lab = build_lab("imbalance", "unused", levels="medium", optimizers="adamw")
    study = lab.cell_study(lab.levels[0], lab.optimizers[0])
    lab_run = study.variant_config(lab.variant("ce_prior+lr0.006"))
    ours = yaml.safe_load((REPO / "configs" / "ablation" / "gradients.yaml").read_text())
    assert ours["seed_everything"] == lab_run["seed_everything"]
    assert ours["data"] == lab_run["data"]
    # the model's image size is the data's (the lab's config also pins it in the model section)
    lab_detector = {k: v for k, v in lab_run["model"]["detector"].items() if k not in ("min_size", "max_size")}
    assert {**ours["model"], "detector": ours["model"]["detector"]} == {**lab_run["model"], "detector": lab_detector}
    for key in ("max_steps", "val_check_interval", "precision", "gradient_clip_val", "accelerator", "devices"):
        assert ours["trainer"][key] == lab_run["trainer"][key], key
