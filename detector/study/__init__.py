"""The loss study and the imbalance lab, one stack (scripts/ablate.py): preset and
plan (plan.py, variants.py) -> runs (runner.py, through the project's LightningCLI) -> records (records.py) -> tables and
figures (report.py, plots.py). The science: stats.py (loss distributions), cells.py (the one best-of-grid
rule, the tie rule), first_step.py (the loss at the prior init); a level's anchor counts: detector.check_data.
"""

from .plan import Study, StudyError, build_study
from .records import load_results
from .runner import run_study
from .variants import Variant, VariantError, parse_variant, parse_variants

__all__ = ["Study", "StudyError", "Variant", "VariantError", "build_study", "load_results",
           "parse_variant", "parse_variants", "run_study"]
