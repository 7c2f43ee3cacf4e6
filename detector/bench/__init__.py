"""Speed of this project next to torchvision's RetinaNet, and against the machine's own limits.

`scripts/bench.py [--quick] --out FILE.json` runs every benchmark of `cases.py` and `memory.py`
and writes one JSON object: an entry per benchmark ({measured values..., "ratio": float, higher
is better for this project, "target", "met"}) and "meta" (machine, versions, settings). Ratios are
taken side by side in one run (`timing.Interleaved`), never from absolute timings.
"""

from .runner import ENTRIES, format_table, run_benchmarks
from .settings import FULL, MODES, QUICK, TINY, BenchSettings

__all__ = ["ENTRIES", "FULL", "MODES", "QUICK", "TINY", "BenchSettings", "format_table", "run_benchmarks"]
