#!/usr/bin/env python
"""Speed of this project next to torchvision's RetinaNet, and against the machine's limit.

    python scripts/bench.py --out bench.json            # full run (slow on a CPU: docs/benchmarks.md)
    python scripts/bench.py --quick --out bench.json    # smaller images and fewer rounds

Writes one JSON object (an entry per benchmark, each with a "ratio", higher is better for this
project, and "meta") and prints the markdown table of docs/benchmarks.md. Uses CUDA when present.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.bench import MODES, format_table, run_benchmarks  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="JSON file to write")
    p.add_argument("--quick", action="store_true", help="smaller images, fewer rounds (a few minutes)")
    p.add_argument("--tiny", action="store_true", help="minimal sizes: checks that everything runs (tests)")
    p.add_argument("--only", nargs="+", metavar="GROUP",
                   help="run only these groups: training assign_loss postprocess coco_eval memory inference")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--table", type=Path, default=None, help="also write the markdown table to this file")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own choice); fewer than the cores "
                        "when other jobs share the machine avoids stalls in every parallel op")
    a = p.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    mode = "tiny" if a.tiny else "quick" if a.quick else "full"
    results = run_benchmarks(MODES[mode], device=a.device, only=a.only, log=lambda m: print(m, file=sys.stderr, flush=True))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    table = format_table(results)
    if a.table:
        a.table.write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
