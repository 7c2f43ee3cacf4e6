"""The loss study: plain cross-entropy against focal loss, with the evidence (scripts/ablate.py).

- variants.py: the variants and their names (`ce_no_prior`, `focal_g2_a0.25`, `ohem_1to3`, ...).
- runner.py: presets, one variant after another through the project's LightningCLI, skipping
  finished ones, several GPUs by shards.
- recorder.py: the callback that writes each variant's training record and end statistics.
- stats.py: the end-of-training loss distributions (the paper's Figure 4) and score histograms.
- report.py: results.csv, results.md and the plots.
"""

from .runner import Study, StudyError, build_study, load_results, run_study
from .variants import ALL_VARIANTS, Variant, VariantError, parse_variant, parse_variants

__all__ = ["ALL_VARIANTS", "Study", "StudyError", "Variant", "VariantError", "build_study", "load_results",
           "parse_variant", "parse_variants", "run_study"]
