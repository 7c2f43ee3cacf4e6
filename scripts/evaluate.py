"""COCO box evaluation: the 12 pycocotools numbers and per-class AP, as a table and a JSON file.

    python scripts/evaluate.py --gt instances_val.json --results detections.json --out metrics.json
    python scripts/evaluate.py --checkpoint runs/synthetic/checkpoints/best.ckpt --config configs/synthetic.yaml \
        --split val --out metrics.json

With --checkpoint, the dataset is the `data:` section of the training config (--config), on the
chosen split; the last line printed is the path of the metrics JSON.

With --report DIR, also writes DIR/index.html (a static page: open it from disk) and
DIR/report.json: per-class table, precision-recall curves, P/R/F1 against the score threshold
and the best-F1 threshold, the confusion matrix, TIDE's error breakdown and the worst images
(with --results, their files are looked up under --images, default the --gt file's folder).

    python scripts/evaluate.py --gt val.json --results dt.json --images data/val_images --report report/

The JSON holds AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl on pycocotools'
0-1 scale (-1 where no ground truth falls in that area range) and "per_class": {name: AP}.
Input errors end in one line "error: ..." on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from detector.cli import USER_ERRORS, positive_int
from detector.io import ensure_writable_folder, writing
from detector.evaluation import (
    BACKENDS,
    CocoDetectionAccumulator,
    EvaluationError,
    evaluate_coco,
    format_metrics_table,
    load_coco_gt,
    save_metrics,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", metavar="DT.json", help="a COCO results file to evaluate (needs --gt)")
    source.add_argument("--checkpoint", metavar="CKPT", help="a trained model to run on a dataset split, then evaluate")
    parser.add_argument("--gt", metavar="GT.json", help="COCO instances JSON of the ground truth")
    parser.add_argument("--config", metavar="CONFIG.yaml", help="with --checkpoint: the training config whose data: section names the dataset")
    parser.add_argument("--split", choices=("val", "train"), default="val", help="with --checkpoint: the split to evaluate")
    parser.add_argument("--data-root", help="with --checkpoint: override the config's data.root")
    parser.add_argument("--device", default="cpu", help="with --checkpoint: cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="with --checkpoint: images per batch")
    parser.add_argument("--out", metavar="FILE.json", help="write the metrics here as JSON")
    parser.add_argument("--backend", choices=BACKENDS, default="pycocotools",
                        help="COCO evaluation implementation (faster_coco_eval needs the fast-eval extra)")
    parser.add_argument("--summary", action="store_true", help="also print the backend's standard summary lines")
    parser.add_argument("--report", metavar="DIR", help="write the HTML evaluation report (index.html, report.json) here")
    parser.add_argument("--images", metavar="DIR", help="with --results --report: the folder the ground truth's "
                        "file_name entries are relative to (default: the --gt file's folder)")
    parser.add_argument("--score-threshold", type=float, default=None, metavar="S",
                        help="with --report: the confusion matrix's score threshold (default: the best-F1 one)")
    parser.add_argument("--gallery", type=int, default=12, metavar="N", help="with --report: the worst images shown")
    return parser


class Evaluated(NamedTuple):
    """The metrics and what the report needs: ground truth, results, images and their files."""

    metrics: dict[str, Any]
    coco_gt: Any
    results: list[dict] | str
    image_ids: list[int] | None
    image_path: Callable[[int], Path | None]
    source: str


def evaluate_results_file(args: argparse.Namespace) -> Evaluated:
    """Mode A: a COCO results file against a COCO ground-truth file."""
    coco_gt = load_coco_gt(args.gt)
    metrics = evaluate_coco(coco_gt, args.results, backend=args.backend, print_summary=args.summary)
    root = Path(args.images) if args.images else Path(args.gt).resolve().parent

    def image_path(image_id: int) -> Path | None:
        name = coco_gt.imgs[image_id].get("file_name")
        return root / str(name) if name else None

    return Evaluated(metrics, coco_gt, args.results, None, image_path, f"{args.results} against {args.gt}")


def evaluate_checkpoint(args: argparse.Namespace) -> Evaluated:
    """Mode B: load the model of ``args.checkpoint``, predict a dataset split, evaluate."""
    from detector.checkpoint import load_detector
    from detector.evaluation.inference import evaluate_detector
    from detector.training.datamodule import datamodule_from_config
    from detector.training.reliability import leaf_datasets

    if args.config is None:
        raise EvaluationError("--checkpoint needs --config CONFIG.yaml (the training config naming the dataset)")
    model = load_detector(args.checkpoint, map_location=args.device)
    overrides = {"root": args.data_root} if args.data_root else {}
    overrides["on_bad_image"] = "error"  # an AP over fewer images than asked is another number: stop instead
    if args.batch_size:
        overrides["val_batch_size"] = args.batch_size
    datamodule = datamodule_from_config(args.config, **overrides)
    accumulator = CocoDetectionAccumulator()
    metrics = evaluate_detector(model, datamodule, split=args.split, device=args.device, print_summary=args.summary,
                                accumulator=accumulator)
    dataset = datamodule.eval_dataset(args.split)
    paths = {int(i): leaf.image_path(k) for leaf in leaf_datasets(dataset) for k, i in enumerate(leaf.image_ids)}
    results = accumulator.results(datamodule.label_to_category_id)
    return Evaluated(metrics, dataset.coco_gt(), results, accumulator.image_ids, paths.get,
                     f"{args.checkpoint} on the {args.split} split of {args.config}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.results is not None and args.gt is None:
        parser.error("--results needs --gt")
    if args.score_threshold is not None and not 0.0 <= args.score_threshold <= 1.0:
        parser.error(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    if args.gallery < 0:
        parser.error(f"--gallery must be >= 0, got {args.gallery}")
    try:
        if args.out:  # before the evaluation's work
            ensure_writable_folder(Path(args.out).absolute().parent)
        done = evaluate_checkpoint(args) if args.checkpoint is not None else evaluate_results_file(args)
        print(format_metrics_table(done.metrics))
        if args.report:
            from detector.evaluation.html_report import write_report

            page = write_report(args.report, done.coco_gt, done.results, done.image_ids, image_path=done.image_path,
                                score_threshold=args.score_threshold, num_gallery=args.gallery, source=done.source)
            print(f"report: {page}")
        if args.out:
            with writing(args.out):
                print(save_metrics(done.metrics, args.out))  # the last line: where the metrics are
    except (EvaluationError, OSError, *USER_ERRORS) as err:  # OSError: e.g. --out not writable
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
