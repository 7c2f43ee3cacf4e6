"""The HTML report: `evaluate --report` writes a static page whose numbers are report.json's, and
the page loads in a real browser (headless Chromium) with every image and no console error."""

from __future__ import annotations

import copy
import html
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import numpy as np
from PIL import Image

from detector.evaluation import COCO_METRIC_NAMES, evaluate_coco, load_coco_gt
from detector.evaluation.tide import ERROR_TYPES

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_HINT = "chromium not found: apt-get update && apt-get install -y chromium"


@pytest.fixture
def report_dir(tmp_path, synthetic_gt_dt):
    """evaluate.py --gt --results --images --report on the seeded 40-image case, images on disk."""
    gt, results = synthetic_gt_dt
    tmp = tmp_path
    images = tmp / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for im in gt["images"]:
        pixels = rng.integers(0, 256, (im["height"], im["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / im["file_name"])
    (tmp / "gt.json").write_text(json.dumps(gt))
    (tmp / "dt.json").write_text(json.dumps(results))
    spec = importlib.util.spec_from_file_location("evaluate_script_report", ROOT / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp / "report"
    status = module.main(["--gt", str(tmp / "gt.json"), "--results", str(tmp / "dt.json"), "--images", str(images),
                          "--report", str(out), "--out", str(tmp / "metrics.json"), "--gallery", "6"])
    assert status == 0
    return out, gt, results


def test_report_json_and_page(report_dir):
    out, gt, results = report_dir
    data = json.loads((out / "report.json").read_text())
    reference = evaluate_coco(load_coco_gt(copy.deepcopy(gt)), results)
    assert data["coco"] == pytest.approx({k: reference[k] for k in COCO_METRIC_NAMES})
    assert [r["class"] for r in data["per_class"]] == ["cat", "dog", "bird"]
    assert {r["class"]: r["AP"] for r in data["per_class"]} == pytest.approx(reference["per_class"])
    assert len(data["pr_curves"]["iou50"]) == 3 and len(data["pr_curves"]["recall"]) == 101
    assert data["confusion_matrix"]["labels"] == ["cat", "dog", "bird", "background"]
    assert data["confusion_matrix"]["score_threshold"] == data["best_f1"]["overall"]["threshold"]
    assert set(data["tide"]["counts"]) == set(ERROR_TYPES)
    assert len(data["gallery"]["images"]) == 6
    assert all((out / g["picture"]).is_file() for g in data["gallery"]["images"])

    page = (out / "index.html").read_text()  # static: local files only, no script, the same numbers
    sources = re.findall(r"<img[^>]*\ssrc='([^']+)'", page)
    assert len(sources) >= 4 + 6  # figures and gallery
    for src in sources:
        assert not re.match(r"[a-z]+://", src) and (out / html.unescape(src)).is_file(), src
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert f"{data['coco']['AP']:.3f}" in page
    for t in ERROR_TYPES:
        assert f"<td>{data['tide']['counts'][t]}</td><td>{data['tide']['delta_ap'][t]:.4f}</td>" in page
    assert "mmdetection" in page and "TIDE" in page


def _browser_check(page: Path) -> dict:
    """Open a copy of ``page`` with a probe script in headless Chromium; the probe writes, after
    the load event, which images failed (not complete or naturalWidth 0) and the errors seen."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip(CHROMIUM_HINT)
    probe = """<script>
    window.__errors = [];
    window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.src))), true);
    const __consoleError = console.error;
    console.error = (...a) => { window.__errors.push(a.join(' ')); __consoleError(...a); };
    window.addEventListener('load', () => {
      const imgs = [...document.images];
      const out = document.createElement('pre');
      out.id = 'probe-result';
      out.textContent = JSON.stringify({images: imgs.length, errors: window.__errors,
        bad: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))});
      document.body.appendChild(out);
    });
    </script>"""
    copy_ = page.with_name("probe_" + page.name)
    copy_.write_text(page.read_text().replace("<head>", "<head>" + probe, 1))
    proc = subprocess.run([chromium, "--headless", "--disable-gpu", "--no-sandbox", "--allow-file-access-from-files",
                           "--virtual-time-budget=15000", "--dump-dom", copy_.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"no probe result from chromium (status {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_page_loads_in_headless_chromium_with_every_image(report_dir):
    out, _, _ = report_dir
    result = _browser_check(out / "index.html")
    assert result["images"] >= 10
    assert result["bad"] == [] and result["errors"] == []
    # the probe can fail: a missing image is reported
    broken = out / "broken.html"
    broken.write_text((out / "index.html").read_text().replace("</main>", "<img src='no_such.png'></main>"))
    result = _browser_check(broken)
    assert result["bad"] == ["no_such.png"]
