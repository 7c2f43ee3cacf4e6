"""The committed study results under docs/ablation/ stay valid: the code, given the command each
folder recorded, rebuilds the settings' fingerprint stored in every result.json, and, for the
imbalance lab (whose runs a rerun resumes), each run's config.yaml (its training settings; the logging the
study adds changed since: Lightning's CSVLogger and Timer replaced the study's own recorder), and each lab
folder's results.csv and summary.md, and each loss study's results.csv and results.md, from its per-run
records (runs/*/result.json, stats.json, train.csv, val.csv).

A fingerprint that moved would make a rerun refuse the folder; training settings that changed would
make another run of the same name.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from detector.study.plan import build_lab, build_study
from detector.study.records import load_results, load_stats
from detector.study.report import lab_runs, results_csv, results_markdown, runs_csv, summary_markdown
from detector.study.runner import variant_config_text
from tests.data.fixtures import load_script

REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted(p.parent.relative_to(REPO) for p in REPO.glob("docs/ablation/*/study.json"))
# a lab may hold another (the imbalance lab's finer sparse grid sits inside its folder)
LABS = sorted(p.parent.relative_to(REPO) for p in REPO.glob("docs/ablation/**/lab.json"))
LAB_RUNS = sorted(run.parent.relative_to(REPO) for lab in LABS for run in (REPO / lab).glob("*/runs/*/result.json"))


def _args(record: Path) -> tuple:
    """scripts/ablate.py's (options, overrides) of the last command a study.json / lab.json recorded."""
    command = shlex.split(json.loads(record.read_text(encoding="utf-8"))["commands"][-1])
    assert command[:2] == ["python", "scripts/ablate.py"]
    return load_script("ablate").build_parser().parse_known_args(command[2:])


def _study(folder: Path):
    """The loss study the last command a folder's study.json recorded describes."""
    args, overrides = _args(folder / "study.json")
    return build_study(args.preset, args.out, variants=args.variants, max_steps=args.max_steps, evals=args.evals,
                       image_size=args.image_size, overrides=overrides)[0]


@pytest.mark.parametrize("folder", STUDIES, ids=str)
def test_a_committed_study_keeps_its_fingerprint(folder, monkeypatch):
    monkeypatch.chdir(REPO)
    study = _study(folder)
    results = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("runs/*/result.json"))]
    assert results and {r["fingerprint"] for r in results} == {study.fingerprint}


@pytest.mark.parametrize("run", LAB_RUNS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_a_committed_lab_run_keeps_its_fingerprint_and_config_file(run, monkeypatch):
    monkeypatch.chdir(REPO)
    cell = run.parent.parent
    args, overrides = _args(cell.parent / "lab.json")
    # every level and optimizer: the last command may have run a part of the lab, not this cell
    lab = build_lab(args.preset, args.out, lrs=args.lrs, seeds=args.seeds, max_steps=args.max_steps, evals=args.evals,
                    overrides=overrides)
    study = next(lab.cell_study(lv, opt) for lv in lab.levels for opt in lab.optimizers
                 if lab.cell_dir(lv, opt) == cell)
    assert study.fingerprint == json.loads((run / "result.json").read_text(encoding="utf-8"))["fingerprint"]
    committed = (run / "config.yaml").read_text(encoding="utf-8")
    rebuilt = variant_config_text(study, lab.variant(run.name))
    assert rebuilt.splitlines()[:3] == committed.splitlines()[:3]
    assert _settings(yaml.safe_load(rebuilt)) == _settings(yaml.safe_load(committed))


def _settings(config: dict) -> dict:
    """A run's config without the logging the study adds (logger, callbacks, how often it logs)."""
    for key in ("logger", "callbacks", "log_every_n_steps"):
        config["trainer"].pop(key)
    return config


def _lab(folder: Path):
    args, overrides = _args(folder / "lab.json")
    return build_lab(args.preset, args.out, levels=args.levels, optimizers=args.optimizers, losses=args.variants,
                     lrs=args.lrs, seeds=args.seeds, max_steps=args.max_steps, evals=args.evals, overrides=overrides)


def _rebuilt_tables(folder: Path) -> tuple[list, dict[str, str]]:
    """(the folder's run rows, {table file: its text rebuilt from them}): a lab's or a loss study's."""
    if (folder / "lab.json").is_file():
        lab = _lab(folder)
        rows = lab_runs(lab)
        return rows, {"results.csv": runs_csv(rows), "summary.md": summary_markdown(lab, rows)}
    results = load_results(folder)
    markdown = results_markdown(results, _study(folder), load_stats(results))
    return results, {"results.csv": results_csv(results), "results.md": markdown}


@pytest.mark.parametrize("folder", [*STUDIES, *LABS], ids=str)
def test_a_committed_table_rebuilds_unchanged_from_its_run_records(folder, monkeypatch):
    monkeypatch.chdir(REPO)
    rows, tables = _rebuilt_tables(folder)
    assert rows
    for name, text in tables.items():
        assert text == (folder / name).read_text(encoding="utf-8"), f"{folder / name} does not rebuild"


def test_the_reference_run_is_among_the_pinned_ones():
    assert Path("docs/ablation/imbalance/dense_adamw/runs/ce_prior+lr0.002") in LAB_RUNS
    assert Path("docs/ablation/quick") in STUDIES
    assert Path("docs/ablation/imbalance") in LABS
    assert Path("docs/ablation/imbalance/sparse_fine") in LABS  # a lab inside a lab's folder
    assert Path("docs/ablation/imbalance/sparse_fine/sparse_adamw/runs/ce_prior+lr0.0011") in LAB_RUNS
