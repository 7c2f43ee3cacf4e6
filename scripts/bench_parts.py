#!/usr/bin/env python
"""Speed of single parts against their plain versions, side by side in one run.

    python scripts/bench_parts.py --out parts.json
    python scripts/bench_parts.py --out parts.json --focal   # and the classification loss, rule vs fast

Each entry times two ways of computing the same thing, interleaved (detector.bench.timing), and
checks that they agree:
- matcher_<M>_boxes: the dense IoU matcher against the culled one (fast_matcher.settings(cull=...)),
  batch 8, the 49,104 anchors of a 512 px image, M random boxes an image; "same": equal matches.
- softplus: F.softplus against max(x, 0) - log(sigmoid(|x|)) from fast_focal._sigmoid_parts
  (sigmoid included), 2^18 logits.
- topk: `logits.flatten(1).topk(1000)` against fast_postprocess.top_pairs on P3 of a 512 px image,
  batch 8, 91 classes; "same": the same values.
- focal (with --focal): the classification loss per anchor, forward and backward, as the rule
  (losses.classification_loss_per_anchor) against the fast path (fast_focal.focal_loss_per_anchor,
  by its default rule: compiled at this size, see "fast_compiled"), batch 8 x 49,104 x 91.
The ratio is the plain time over ours: higher is better for us.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from detector.bench.models import feature_sizes, random_boxes  # noqa: E402
from detector.bench.timing import Interleaved  # noqa: E402
from detector.model import AnchorGenerator, Matcher, classification_loss_per_anchor  # noqa: E402
from detector.model import fast_focal, fast_matcher  # noqa: E402
from detector.model.fast_postprocess import top_pairs  # noqa: E402

SIZE, BATCH, CLASSES = 512, 8, 91


def _entry(it: Interleaved, plain: str, ours: str, **extra) -> dict:
    return {f"{plain}_s": it.median(plain), f"{ours}_s": it.median(ours), "rounds": it.rounds,
            "ratio": it.ratio(plain, ours), **extra}


def _anchors() -> torch.Tensor:
    return AnchorGenerator()((SIZE, SIZE), feature_sizes(SIZE))


def matcher_entries(box_counts: list[int], rounds: int) -> dict:
    anchors = _anchors()
    g = torch.Generator().manual_seed(0)
    matcher = Matcher()

    def dense(*args):
        with fast_matcher.settings(cull=False):
            return matcher(*args)

    def culled(*args):
        with fast_matcher.settings(cull=True):
            return matcher(*args)

    out = {}
    for m in box_counts:
        boxes, _ = random_boxes(BATCH, m, SIZE, g, num_classes=CLASSES)
        valid = torch.ones(BATCH, m, dtype=torch.bool)
        same = torch.equal(dense(boxes, valid, anchors), culled(boxes, valid, anchors))
        it = Interleaved({"dense": lambda: dense(boxes, valid, anchors), "culled": lambda: culled(boxes, valid, anchors)},
                         rounds=rounds)
        out[f"matcher_{m}_boxes"] = _entry(it, "dense", "culled", anchors=len(anchors), same=same)
    return out


def softplus_entry(rounds: int) -> dict:
    x = torch.randn(1 << 18, generator=torch.Generator().manual_seed(0)) * 4
    ours = lambda: x.clamp(min=0) - fast_focal._sigmoid_parts(x)[2]  # noqa: E731
    err = float((F.softplus(x.double()) - ours().double()).abs().max())
    it = Interleaved({"F_softplus": lambda: F.softplus(x), "ours": ours},
                     rounds=rounds * 20)
    return {"softplus": _entry(it, "F_softplus", "ours", elements=x.numel(), max_abs_error_vs_float64=err)}


def topk_entry(rounds: int) -> dict:
    r3 = (SIZE // 8) ** 2 * 9  # P3's anchors
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(BATCH, r3, CLASSES, generator=g) * 2.0 - 4.0
    plain = lambda: logits.flatten(1).topk(1000, dim=1)  # noqa: E731
    ours = lambda: top_pairs(logits, 1000)  # noqa: E731
    same = torch.equal(plain()[0], ours()[0])
    it = Interleaved({"flatten_topk": plain, "top_pairs": ours}, rounds=rounds)
    return {"topk": _entry(it, "flatten_topk", "top_pairs", anchors=r3, classes=CLASSES, same=same)}


def focal_entry(rounds: int) -> dict:
    r = len(_anchors())
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(BATCH, r, CLASSES, generator=g) - 4.0).requires_grad_()
    labels = torch.full((BATCH, r), CLASSES)
    labels[:, ::300] = 3
    valid = torch.ones(BATCH, r, dtype=torch.bool)

    def run(per_anchor):
        def step():
            x.grad = None
            loss = per_anchor(x, labels, valid)
            loss.sum().backward()
            return loss.detach().sum()
        return step

    rule, fast = run(classification_loss_per_anchor), run(fast_focal.focal_loss_per_anchor)
    rel = float((rule() - fast()).abs() / rule().abs())
    it = Interleaved({"rule": rule, "fast": fast}, rounds=rounds)
    return {"focal": _entry(it, "rule", "fast", shape=[BATCH, r, CLASSES], loss_sum_relative_difference=rel,
                            fast_compiled=fast_focal.use_compiled(x))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="JSON file to write")
    p.add_argument("--boxes", type=int, nargs="+", default=[8, 20, 200, 1000], help="boxes per image (matcher)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of each entry")
    p.add_argument("--focal", action="store_true",
                   help="also time the classification loss, rule against fast path (compiles it: slow)")
    a = p.parse_args(argv)
    if any(m < 1 for m in a.boxes) or a.rounds < 1:
        p.error("--boxes and --rounds must be positive")
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    results.update(matcher_entries(a.boxes, a.rounds))
    results.update(softplus_entry(a.rounds))
    results.update(topk_entry(a.rounds))
    if a.focal:
        results.update(focal_entry(a.rounds))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, entry in results.items():
        if isinstance(entry, dict):
            times = ", ".join(f"{k[:-2]} {v * 1e3:.1f} ms" for k, v in entry.items() if k.endswith("_s"))
            print(f"{name}: {times}, ratio {entry['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
