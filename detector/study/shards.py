"""Several GPUs: one process of the same command per GPU, each training its share of the list.

`launch_shards` starts `script argv --shard k/n --no-report` once per GPU (CUDA_VISIBLE_DEVICES);
shard k trains runs k, k + n, k + 2n, ... of the list, and the parent writes the report when all
are done. A shard child is marked in its environment, so that only the parent records the command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

_SHARD_CHILD = "DETECTOR_STUDY_SHARD_CHILD"


def is_shard_child() -> bool:
    """Whether this process is a shard that launch_shards started."""
    return bool(os.environ.get(_SHARD_CHILD))


def launch_shards(script: str, argv: list[str], gpus: list[str], out: Path,
                  log: Callable[[str], None] = print) -> int:
    """Run `script argv --shard k/n` once per GPU (CUDA_VISIBLE_DEVICES=gpu), in parallel.

    Each shard's output is appended to OUT/logs/shard<k>.log. Returns the worst exit status.
    """
    (out / "logs").mkdir(parents=True, exist_ok=True)
    procs = []
    for k, gpu in enumerate(gpus):
        log_path = out / "logs" / f"shard{k}.log"
        cmd = [sys.executable, script, *argv, "--shard", f"{k}/{len(gpus)}", "--no-report"]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, _SHARD_CHILD: "1"}  # the parent records the command
        log(f"[study] shard {k}/{len(gpus)} on GPU {gpu}: log {log_path}")
        procs.append(subprocess.Popen(cmd, env=env, stdout=log_path.open("a"), stderr=subprocess.STDOUT))
    return max(p.wait() for p in procs)


__all__ = ["is_shard_child", "launch_shards"]
