"""Train (and validate) a RetinaNet with Lightning; every setting comes from a YAML config.

    python scripts/train.py fit --config configs/synthetic.yaml
    python scripts/train.py fit --config configs/synthetic.yaml --trainer.max_steps 200 --data.batch_size 4
    python scripts/train.py fit --config configs/synthetic.yaml --ckpt_path runs/synthetic/checkpoints/last.ckpt
    python scripts/train.py validate --config configs/synthetic.yaml --ckpt_path runs/synthetic/checkpoints/best.ckpt

Any key of the config can be overridden on the command line; the resolved config is saved next to
each run's TensorBoard logs (config.yaml). `--print_config` shows it without running.
"""

from __future__ import annotations

import sys

from detector.cli import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:]))
