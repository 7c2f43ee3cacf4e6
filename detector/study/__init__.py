"""The loss study: plain cross-entropy against focal loss, with the evidence (scripts/ablate.py).

- presets.py: configs/ablation/*.yaml read into a training config and the study's settings.
- overrides.py: `--section.key VALUE` overrides, checked by the training config's jsonargparse parser.
- variants.py: the variants, data in the preset (study.losses), and their `+lr<V>`, `+seed<S>` departures.
- plan.py: Study, what a study trains: the shared settings, their fingerprint, each variant's config.
- folder.py: an output folder holds one set of settings (study.json, the commands that made it).
- synthetic_data.py: the preset's synthetic data, generated once and checked after.
- runner.py: one variant after another through the project's LightningCLI, resuming, skipping finished ones.
- shards.py: one process per GPU, each a shard of the list.
- recorder.py: the callback that writes each variant's training record and end statistics.
- records.py: those record files, written and read back.
- stats.py: the end-of-training loss distributions (the paper's Figure 4) and score histograms.
- report.py: results.csv and results.md; plots.py: the plots.
- lab.py, lab_report.py, anchor_stats.py: the imbalance lab (one loss study per level and optimizer).
"""

from .plan import Study, build_study
from .presets import StudyError
from .runner import load_results, run_study
from .variants import Variant, VariantError, parse_variant, parse_variants

__all__ = ["Study", "StudyError", "Variant", "VariantError", "build_study", "load_results",
           "parse_variant", "parse_variants", "run_study"]
