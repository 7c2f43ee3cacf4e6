"""The evaluation report: DIR/report.json (every number) and DIR/index.html (the page that shows
them), with its PNG figures and gallery images beside it; static, opens from disk offline.

    write_report("runs/synthetic/report", coco_gt, results, image_ids, image_path=lambda id: path)

Sections: the 12 COCO numbers, the per-class table, precision-recall curves (curves.py),
P/R/F1 against the score threshold with the best-F1 thresholds, the confusion matrix
(confusion.py), TIDE's error breakdown (tide.py) and the worst images (gallery.py).
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from PIL import Image

from ..data.images import load_rgb_image
from .coco import COCO_METRIC_NAMES, class_names, coco_metrics, load_results, run_coco_eval, validate_results
from .confusion import confusion_matrix, row_normalised
from .curves import class_matches, class_table, default_score_threshold, pr_curves, score_curves
from .errors import is_no_gt
from .figures import (
    ERROR_COLORS, GROUND_TRUTH_COLOR, TRUE_POSITIVE_COLOR, confusion_figure, pr_figure, save_png, score_figure,
    tide_figure,
)
from .gallery import draw_errors, error_weights, worst_images
from .report import METRIC_SETTINGS
from .tide import ERROR_NAMES, ERROR_TYPES, TideResult, tide_errors

logger = logging.getLogger(__name__)

CONFUSION_DEFINITION = (
    "mmdetection's tools/analysis_tools/confusion_matrix.py (analyze_per_img_dets): rows are the "
    "ground-truth class, columns the detected class, the last of each background; a detection with "
    "score >= the threshold adds 1 to [gt class, its class] for every ground-truth box it overlaps "
    "with IoU >= 0.5, or 1 to [background, its class] if it overlaps none; a ground-truth box that no "
    "detection of its own class overlaps adds 1 to [its class, background]; crowd boxes are left out."
)


def build_report(coco_gt: COCO, results: Any, image_ids: Iterable[int] | None = None, *,
                 score_threshold: float | None = None) -> tuple[dict[str, Any], TideResult, list[dict]]:
    """Every number of the report (report.json without its "gallery"), TIDE's result and the
    validated results entries.

    Args:
        coco_gt: the ground truth; results: COCO results entries or a results JSON path (validated here);
        image_ids: the evaluated images (default: all of ``coco_gt``);
        score_threshold: the confusion matrix's (default: the best-F1 threshold over all classes).
    """
    if isinstance(results, (str, os.PathLike)):
        results = load_results(results)
    results = validate_results(results, coco_gt)
    coco_eval = run_coco_eval(coco_gt, results, image_ids=image_ids)
    image_ids = [int(i) for i in coco_eval.params.imgIds]
    cat_ids = [int(c) for c in coco_eval.params.catIds]
    names = class_names(cat_ids, coco_gt.cats)
    matches = class_matches(coco_eval, 0.5)
    table = class_table(coco_eval, matches, names)
    scores = score_curves(matches, names)
    best = scores["overall"]["best"]
    if score_threshold is None:
        score_threshold = default_score_threshold(matches)
    counts = confusion_matrix(coco_gt, results, image_ids, cat_ids, score_threshold=score_threshold)
    tide = tide_errors(coco_gt, results, image_ids, cat_ids)
    metrics = coco_metrics(coco_eval, coco_gt.cats, per_class=False)
    data = {
        "num_images": len(image_ids),
        "num_detections": len(results),
        "category_ids": cat_ids,
        "coco": {k: (None if is_no_gt(metrics[k]) else metrics[k]) for k in COCO_METRIC_NAMES},
        "per_class": table,
        "pr_curves": {"source": "pycocotools COCOeval.eval['precision'][t, :, k, 0, -1] (area all, maxDets 100)",
                      "classes": names, **pr_curves(coco_eval)},
        "score_curves": {"iou": 0.5, "source": "COCOeval.evalImgs matches at IoU 0.5 (area all, maxDets 100)",
                         **scores},
        "best_f1": {"overall": best, "per_class": {n: scores["per_class"][n]["best"] for n in names}},
        "confusion_matrix": {
            "definition": CONFUSION_DEFINITION, "labels": [*names, "background"],
            "score_threshold": float(score_threshold), "iou_threshold": 0.5,
            "counts": counts.tolist(), "row_normalised": _nan_to_none(row_normalised(counts)),
        },
        "tide": {
            "definition": "TIDE (Bolya et al., ECCV 2020) as its reference code tidecv 1.0.1 computes it: "
                          "foreground IoU 0.5, background IoU 0.1, AP at IoU 0.5 on the 0-1 scale",
            "ap50": tide.ap, "counts": tide.counts, "delta_ap": tide.delta_ap,
            "names": {t: ERROR_NAMES[t] for t in ERROR_TYPES},
        },
    }
    return data, tide, results


def write_report(out_dir: str | os.PathLike, coco_gt: COCO, results: Any, image_ids: Iterable[int] | None = None,
                 *, image_path: Callable[[int], Path | None] | None = None, score_threshold: float | None = None,
                 num_gallery: int = 12, title: str = "Evaluation report", source: str = "") -> Path:
    """Write ``out_dir``/report.json, index.html, the figures and the gallery; returns the
    index.html path.

    Args:
        image_path: image id -> the image file (for the gallery), None where there is none; without
            it, or where a file cannot be read, the gallery lists the image without a picture.
        num_gallery: how many of the worst images to draw.
        source: one line naming what was evaluated (shown on the page).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data, tide, results = build_report(coco_gt, results, image_ids, score_threshold=score_threshold)
    names = data["pr_curves"]["classes"]
    weights = error_weights(tide)
    gallery = worst_images(tide, weights, num_gallery)
    label_names = dict(zip(data["category_ids"], names))
    min_score = data["confusion_matrix"]["score_threshold"]
    (out / "gallery").mkdir(exist_ok=True)
    for row in gallery:
        row["file_name"] = str(coco_gt.imgs[row["image_id"]].get("file_name", ""))
        row["picture"] = _draw_gallery_image(out, row["image_id"], image_path, coco_gt, results, tide, label_names,
                                             min_score)
    data["gallery"] = {"weights": weights, "min_score": min_score, "images": gallery}
    data["source"] = source

    save_png(pr_figure(data["pr_curves"], names, data["per_class"]), out / "pr_curves.png")
    save_png(score_figure(data["score_curves"], names), out / "score_curves.png")
    cm = data["confusion_matrix"]
    save_png(confusion_figure(np.array(cm["counts"], dtype=float), _none_to_nan(cm["row_normalised"]), cm["labels"],
                              cm["score_threshold"]), out / "confusion_matrix.png")
    save_png(tide_figure(data["tide"]), out / "tide_errors.png")
    (out / "report.json").write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    page = out / "index.html"
    page.write_text(render_html(data, title), encoding="utf-8")
    return page


def _draw_gallery_image(out: Path, image_id: int, image_path: Callable[[int], Path | None] | None, coco_gt: COCO,
                        results: Sequence[Mapping[str, Any]], tide: TideResult, names: Mapping[int, str],
                        min_score: float) -> str | None:
    """gallery/<id>.png (relative to ``out``), or None when the image cannot be read."""
    path = image_path(image_id) if image_path is not None else None
    if path is None:
        return None
    try:
        array = load_rgb_image(path)
    except Exception as err:  # a report without one picture beats no report
        logger.warning("gallery: image %s not drawn: %s", path, " ".join(str(err).split()))
        return None
    drawn = draw_errors(torch.from_numpy(array).permute(2, 0, 1).contiguous(), image_id, coco_gt, results, tide,
                        names, min_score)
    name = f"gallery/{image_id}.png"
    Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(out / name)
    return name


# --------------------------------------------------------------------------------------- the page

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;color:#1d2330;background:#f4f6f9}
header{background:#1d2330;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#b8c0cc;font-size:13px}
nav{background:#fff;border-bottom:1px solid #dde2ea;padding:8px 32px;position:sticky;top:0;z-index:1}
nav a{margin-right:18px;color:#2453a6;text-decoration:none;font-size:14px}
main{max-width:1320px;margin:0 auto;padding:8px 32px 48px}
section{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:16px 22px;margin:18px 0}
h2{font-size:18px;margin:0 0 10px} p.note{color:#5a6372;font-size:13px;margin:6px 0 10px;max-width:980px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{padding:4px 10px;border-bottom:1px solid #e6e9ef;text-align:right}
th{background:#f0f3f7;font-weight:600} td:first-child,th:first-child{text-align:left}
tr:hover td{background:#f7f9fc}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:4px 0 12px}
.card{border:1px solid #dde2ea;border-radius:6px;padding:8px 14px;min-width:92px;background:#fafbfd}
.card b{display:block;font-size:20px} .card span{font-size:12px;color:#5a6372}
img.fig{max-width:100%;height:auto;display:block;margin:8px 0}
.row{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.chip{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;margin:1px 3px 1px 0;color:#111}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:14px}
.gallery figure{margin:0;border:1px solid #dde2ea;border-radius:6px;padding:8px;background:#fafbfd}
.gallery img{width:100%;height:auto;display:block;background:#222}
.gallery figcaption{font-size:12px;margin-top:6px;color:#333}
td.cm{font-variant-numeric:tabular-nums} td.cm small{color:#6b7480}
"""


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _chip(kind: str, text: str) -> str:
    color = ERROR_COLORS.get(kind, TRUE_POSITIVE_COLOR if kind == "tp" else GROUND_TRUTH_COLOR)
    border = "border:1px solid #999;" if kind == "gt" else ""
    return f'<span class="chip" style="background:{color};{border}">{html.escape(text)}</span>'


def render_html(data: Mapping[str, Any], title: str) -> str:
    """The page of a report's numbers (`build_report` plus "gallery" and "source")."""
    e = html.escape
    coco = data["coco"]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style></head><body>",
             f"<header><h1>{e(title)}</h1><p>{e(data.get('source', ''))} &middot; {data['num_images']} images, "
             f"{data['num_detections']} detections &middot; numbers in report.json</p></header>",
             "<nav><a href='#coco'>COCO</a><a href='#classes'>Classes</a><a href='#pr'>PR curves</a>"
             "<a href='#threshold'>Score threshold</a><a href='#confusion'>Confusion</a><a href='#errors'>Errors</a>"
             "<a href='#gallery'>Worst images</a></nav><main>"]

    cards = "".join(f"<div class='card'><b>{_fmt(coco[k])}</b><span>{k}</span></div>" for k in ("AP", "AP50", "AP75", "AR100"))
    rows = "".join(f"<tr><td>{k}</td><td>{METRIC_SETTINGS[k][0]}</td><td>{METRIC_SETTINGS[k][1]}</td>"
                   f"<td>{METRIC_SETTINGS[k][2]}</td><td>{_fmt(coco[k])}</td></tr>" for k in COCO_METRIC_NAMES)
    parts.append(f"<section id='coco'><h2>COCO box metrics</h2><div class='cards'>{cards}</div>"
                 "<table><tr><th>Metric</th><th>IoU</th><th>Area</th><th>MaxDets</th><th>Value</th></tr>"
                 f"{rows}</table><p class='note'>pycocotools' COCOeval, 0-1 scale; n/a where no ground truth "
                 "falls in that area range.</p></section>")

    best = data["best_f1"]["per_class"]
    rows = "".join(
        f"<tr><td>{e(r['class'])}</td><td>{_fmt(r['AP'])}</td><td>{_fmt(r['AP50'])}</td><td>{_fmt(r['AP75'])}</td>"
        f"<td>{_fmt(r['recall100'])}</td><td>{r['instances']}</td><td>{r['images']}</td>"
        f"<td>{_fmt((best[r['class']] or {}).get('threshold'))}</td><td>{_fmt((best[r['class']] or {}).get('f1'))}</td></tr>"
        for r in data["per_class"])
    parts.append("<section id='classes'><h2>Per class</h2><table><tr><th>Class</th><th>AP</th><th>AP50</th>"
                 "<th>AP75</th><th>Recall@100</th><th>Instances</th><th>Images</th><th>Best-F1 threshold</th>"
                 f"<th>Best F1</th></tr>{rows}</table><p class='note'>AP, AP50, AP75: area all, 100 detections "
                 "an image; recall@100: the class's AR100 (mean over IoU 0.5:0.95); instances: non-crowd "
                 "ground-truth boxes; images: images holding at least one.</p></section>")

    parts.append("<section id='pr'><h2>Precision-recall curves</h2><img class='fig' src='pr_curves.png' "
                 "alt='precision-recall curves'><p class='note'>Read from pycocotools' accumulated "
                 "<code>eval['precision']</code> at its 101 recall points (interpolated precision; 0 past the "
                 "highest recall reached). Legend: the class's AP50 (left) and AP (right).</p></section>")

    ov = data["best_f1"]["overall"]
    overall = ("no detection or no ground truth: no best-F1 threshold" if ov is None else
               f"best F1 over all classes: <b>{ov['f1']:.3f}</b> at score &ge; <b>{ov['threshold']:.3f}</b> "
               f"(precision {ov['precision']:.3f}, recall {ov['recall']:.3f}); pass it to "
               f"<code>detector predict --min-score {ov['threshold']:.3f}</code>")
    parts.append(f"<section id='threshold'><h2>Precision, recall and F1 against the score threshold</h2>"
                 f"<p>{overall}</p><img class='fig' src='score_curves.png' alt='P, R, F1 vs score'>"
                 "<p class='note'>Counts at IoU 0.5 from COCOeval's own matching (area all, 100 detections an "
                 "image); the all-classes curve pools every class's detections and ground truth. The per-class "
                 "best-F1 thresholds are in the table above.</p></section>")

    cm = data["confusion_matrix"]
    labels = cm["labels"]
    head = "".join(f"<th>{e(x)}</th>" for x in labels)
    body = ""
    for name, counts, norm in zip(labels, cm["counts"], cm["row_normalised"]):
        cells = "".join(f"<td class='cm'>{c}<br><small>{_fmt(n, 2)}</small></td>" for c, n in zip(counts, norm))
        body += f"<tr><td>{e(name)}</td>{cells}</tr>"
    parts.append(f"<section id='confusion'><h2>Confusion matrix</h2><img class='fig' src='confusion_matrix.png' "
                 "alt='confusion matrix'><table><tr><th>ground truth \\ detected</th>"
                 f"{head}</tr>{body}</table><p class='note'>Score threshold {cm['score_threshold']:.3f} (the "
                 f"best-F1 one unless given), IoU 0.5; each cell: count, then row-normalised. Definition: "
                 f"{e(cm['definition'])}</p></section>")

    tide = data["tide"]
    rows = "".join(f"<tr><td>{_chip(t, ERROR_NAMES[t])}</td><td>{tide['counts'][t]}</td>"
                   f"<td>{tide['delta_ap'][t]:.4f}</td></tr>" for t in ERROR_TYPES)
    parts.append("<section id='errors'><h2>Errors behind the AP (TIDE)</h2><div class='row'><table><tr><th>Error"
                 f"</th><th>Count</th><th>AP50 gained by fixing it</th></tr>{rows}</table>"
                 "<img class='fig' style='max-width:760px' src='tide_errors.png' alt='TIDE errors'></div>"
                 f"<p class='note'>TIDE's AP at IoU 0.5: {tide['ap50']:.4f}. {e(tide['definition'])}. "
                 "Classification: IoU &ge; 0.5 with a box of another class; localisation: IoU in [0.1, 0.5] with "
                 "its class; both: neither, yet IoU &gt; 0.1 with something; duplicate: a box of its class that "
                 "a higher-scoring detection already took; background: IoU &le; 0.1 with every box; missed: a "
                 "box no detection found nor an error above would fix. Fixing: cls/loc errors become true "
                 "positives, dupe/bkg/both are removed, missed boxes leave the ground truth.</p></section>")

    g = data["gallery"]
    legend = " ".join([_chip("gt", "ground truth"), _chip("tp", "true positive")]
                      + [_chip(t, ERROR_NAMES[t]) for t in ERROR_TYPES])
    figures = []
    for row in g["images"]:
        chips = " ".join(_chip(t, f"{t} {n}") for t, n in row["errors"].items() if n)
        pic = (f"<img src='{e(row['picture'])}' alt='image {row['image_id']}'>" if row["picture"]
               else "<p class='note'>(image file not found: pass --images DIR)</p>")
        figures.append(f"<figure>{pic}<figcaption><b>image {row['image_id']}</b> {e(row['file_name'])} &middot; "
                       f"weighted errors {row['weighted_errors']:.3g}<br>{chips}</figcaption></figure>")
    weights = ", ".join(f"{t} {w:.2g}" for t, w in g["weights"].items())
    parts.append(f"<section id='gallery'><h2>Worst images</h2><p>{legend}</p><p class='note'>Ranked by their "
                 f"TIDE errors, each weighted by the AP50 its type costs an error on average ({weights}). "
                 f"Detections with score &lt; {g['min_score']:.3f} are not drawn; missed boxes always are.</p>"
                 f"<div class='gallery'>{''.join(figures) or '<p>No errors.</p>'}</div></section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _nan_to_none(a: np.ndarray) -> list:
    return [[None if np.isnan(v) else float(v) for v in row] for row in a]


def _none_to_nan(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


__all__ = ["CONFUSION_DEFINITION", "build_report", "render_html", "write_report"]
