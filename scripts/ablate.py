"""The loss study: train the variants of a preset one after another and write the table and plots.

    python scripts/ablate.py --preset quick --out docs/ablation/quick          # its time: docs/benchmarks.md
    python scripts/ablate.py --preset quick --variants ce_prior,focal_g2_a0.25 --max-steps 100 --out /tmp/q
    python scripts/ablate.py --preset voc --out runs/ablation/voc                # one GPU
    python scripts/ablate.py --preset voc --out runs/ablation/voc --gpus 0,1,2,3 # one process per GPU
    python scripts/ablate.py --preset quick --out docs/ablation/quick --report-only
    python scripts/ablate.py --list

The imbalance lab (configs/ablation/imbalance.yaml; detector/study/plan.py, runner.py): focal
loss against plain CE and Sampling-Free CE at several imbalance levels, under SGD and AdamW, one
lr grid for every loss, the best cells at two seeds. Resumable, and runnable in parts:

    python scripts/ablate.py --preset imbalance --out docs/ablation/imbalance                   # everything
    python scripts/ablate.py --preset imbalance --out docs/ablation/imbalance --optimizers adamw --levels dense
    python scripts/ablate.py --preset imbalance --out docs/ablation/imbalance --stage grid --shard 0/2
    python scripts/ablate.py --preset imbalance --out docs/ablation/imbalance --report-only

Your own data, with any preset's recipe: pass the data module's settings, as for scripts/train.py:

    python scripts/ablate.py --preset voc --out runs/ablation/mine \\
        --data.dataset coco --data.root /data/mine --data.train_ann train.json --data.val_ann val.json \\
        --data.train_images images --data.val_images images
    python scripts/ablate.py --preset voc --out runs/ablation/mine_voc \\
        --data.dataset voc --data.root /data/MyVOC --data.voc_train_years '["2007"]' --data.voc_val_year 2007 \\
        --data.voc_val_set val --data.classes '[cat, dog]'

Variants are data: the preset's study.losses names each loss and its model.detector settings (--list
shows them; "all" runs every one); a departure from the recipe is a labelled row: focal_g2_a0.25+clip10,
+lr<V>, +seed<S> (detector/study/variants.py).
A rerun with the same --out skips the finished variants. Output: see detector/study/runner.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other --section.key VALUE (e.g. --data.root DIR, --trainer.precision 32-true) overrides the "
               "preset for every variant.",
    )  # fmt: skip
    add = parser.add_argument
    add("--preset", default="quick", help="a name in configs/ablation/ (quick, voc) or a YAML path (default quick)")
    add("--out", help="output folder (default runs/ablation/<preset>)")
    add("--variants", help="comma-separated variant names, or all (default: the preset's list)")
    add("--max-steps", type=int, help="training steps per variant (default: the preset's)")
    add("--evals", type=int, help="validations per variant, evenly spaced, the last at the end (default: the preset's)")
    add("--image-size", type=int, help="train and evaluate at this size (short side and long side cap)")
    add("--shard", help="i/n: train only variants i, i+n, i+2n, ... of the list (0-based), e.g. one per GPU")
    add("--gpus", help="comma-separated GPU ids: one process per GPU, each a --shard, then one report")
    add("--force", action="store_true", help="retrain the listed variants even when finished")
    add("--no-report", action="store_true", help="do not write the plots at the end (tables are always written)")
    add("--report-only", action="store_true",
        help="train nothing: rewrite the table and plots of --out (with --no-report: the tables only)")
    add("--list", action="store_true", help="list the presets and the variants (study.losses) of --preset, then exit")
    lab = parser.add_argument_group("the imbalance lab (a preset with study.levels)")
    lab.add_argument("--levels", help="comma-separated level names (default: all of the preset's)")
    lab.add_argument("--optimizers", help="comma-separated optimizer names (default: all of the preset's)")
    lab.add_argument("--lrs", help="comma-separated base lrs replacing every optimizer's grid (pilots, smoke tests)")
    lab.add_argument("--seeds", help="comma-separated seeds; the first is the grid's (default: the preset's)")
    lab.add_argument("--stage", default="all", choices=("grid", "seeds", "all"),
                     help="grid: every (loss, lr) at the first seed; seeds: the best lrs at the other seeds; all: both")
    return parser


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SystemExit(f"error: --shard wants i/n, e.g. 0/2, got {text!r}") from None
    if not 0 <= i < n:
        raise SystemExit(f"error: --shard {text}: need 0 <= i < n")
    return i, n


def _without(argv: list[str], option: str) -> list[str]:
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == option:
            skip = True
        elif not token.startswith(option + "="):
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = build_parser().parse_known_args(argv)

    from detector.cli import one_line_errors
    from detector.study import StudyError, VariantError, build_study, run_study
    from detector.study.plan import LabError, build_lab, is_lab_preset, preset_names, preset_path, read_preset
    from detector.study.report import write_lab_report, write_report
    from detector.study.runner import check_same_settings, launch_shards, prepare_study, run_lab

    if args.list:
        print("presets:", ", ".join(preset_names()))
        losses = (read_preset(preset_path(args.preset)).get("study") or {}).get("losses") or {}
        print(f"variants of {args.preset} (all):", ", ".join(losses))
        return 0
    try:
        with one_line_errors():
            out = Path(args.out or f"runs/ablation/{Path(args.preset).stem}")
            if is_lab_preset(args.preset):
                return _lab(args, argv, overrides, out, build_lab, run_lab, write_lab_report, launch_shards)
            study, variants = build_study(
                args.preset, out, variants=args.variants, max_steps=args.max_steps, evals=args.evals,
                image_size=args.image_size, overrides=overrides, command=["python", "scripts/ablate.py", *argv],
            )  # fmt: skip
            if args.report_only:
                check_same_settings(study)  # the header describes the settings: they must be the folder's
                write_report(study, plots=not args.no_report)
                print(f"[study] table: {out / 'results.md'}")
                return 0
            if args.gpus:
                gpus = [g for g in args.gpus.split(",") if g.strip()]
                prepare_study(study)  # once, before the shards start
                status = launch_shards(__file__, _without(argv, "--gpus"), gpus, out)
                write_report(study)
                print(f"[study] table: {out / 'results.md'}")
                return status
            run_study(study, variants, shard=_shard(args.shard) if args.shard else None, force=args.force,
                      report=not args.no_report)
    except (StudyError, VariantError, LabError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _lab(args, argv, overrides, out, build_lab, run_lab, write_lab_report, launch_shards) -> int:
    lab = build_lab(args.preset, out, levels=args.levels, optimizers=args.optimizers, losses=args.variants,
                    lrs=args.lrs, seeds=args.seeds, max_steps=args.max_steps, evals=args.evals, overrides=overrides,
                    command=["python", "scripts/ablate.py", *argv])
    if args.report_only:
        write_lab_report(lab, plots=not args.no_report)
        print(f"[lab] summary: {out / 'summary.md'}; figure: {out / 'gap_vs_imbalance.png'}")
        return 0
    if args.gpus:
        gpus = [g for g in args.gpus.split(",") if g.strip()]
        status = 0
        for stage in ("grid", "seeds") if args.stage == "all" else (args.stage,):  # a stage's list is fixed
            status = max(status, launch_shards(__file__, [*_without(_without(argv, "--gpus"), "--stage"),
                                                          "--stage", stage], gpus, out))
        write_lab_report(lab)
        return status
    run_lab(lab, stage=args.stage, shard=_shard(args.shard) if args.shard else None, force=args.force,
            report=not args.no_report)
    print(f"[lab] summary: {out / 'summary.md'}; figure: {out / 'gap_vs_imbalance.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
