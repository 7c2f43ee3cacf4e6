"""The loss study and the imbalance lab, one stack (scripts/ablate.py): preset -> plan -> runs -> records ->
tables and figures.

- presets.py: configs/ablation/*.yaml read into a training config and the study's settings; `--section.key
  VALUE` overrides, checked by the training config's own jsonargparse parser.
- variants.py: the variants, data in the preset (study.losses), and their `+lr<V>`, `+seed<S>` departures.
- plan.py: Study (what a loss study trains: the shared settings, their fingerprint, each variant's config)
  and Lab (the imbalance lab: one Study per level and optimizer, its lr grids and seeds).
- runner.py: the runs one after another through the project's LightningCLI, resuming, skipping finished
  ones; an output folder's one set of settings; the synthetic data; one process per GPU; the lab's stages.
- recorder.py: the callback that writes each run's training record; records.py: those files, read back.
- stats.py: the end-of-training loss distributions (the paper's Figure 4) and score histograms.
- cells.py: the one best-of-grid rule and the gaps' tie rule; first_step.py: the loss at the prior init;
  anchor_stats.py: a level's anchor counts.
- report.py: the tables (results.csv, results.md; the lab's results.csv, summary.md); plots.py: the figures.
"""

from .plan import Study, build_study
from .presets import StudyError
from .records import load_results
from .runner import run_study
from .variants import Variant, VariantError, parse_variant, parse_variants

__all__ = ["Study", "StudyError", "Variant", "VariantError", "build_study", "load_results",
           "parse_variant", "parse_variants", "run_study"]
