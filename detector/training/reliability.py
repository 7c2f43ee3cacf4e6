"""Training that survives faults: atomic checkpoint files and a training loader that resumes exactly.

Atomic checkpoints
    `AtomicCheckpointIO` writes a checkpoint to a temporary file in the checkpoint's own folder,
    flushes it to disk (fsync) and renames it over the target with `os.replace`, which POSIX makes
    atomic: a reader (or a run resuming after SIGKILL, or a power cut) sees either the old
    last.ckpt or the new one, never half a file. Lightning's own `TorchCheckpointIO` writes through
    an fsspec transaction whose temporary file lives in the system temp folder; when that is another
    file system (a tmpfs /tmp, a network checkpoint folder) the final move is a copy into the
    target, so a kill during that copy leaves a truncated last.ckpt. `DetectorCLI` installs this
    plugin in place of the default (`use_atomic_checkpoint_io`).

Exact resume mid-epoch
    A plain `DataLoader(shuffle=True)` draws each epoch's order from the global torch RNG, and the
    augmentation draws from a stream that advanced with every image; neither is in a checkpoint, so
    a run resumed in the middle of an epoch sees other images, differently augmented, than the run
    that was killed (Lightning warns: "your dataloader is not resumable"). Here:

    - `EpochSampler` orders epoch e by a permutation seeded with (seed + e), the same on every
      process and for every world size (torch's `DistributedSampler`, which it extends), hands each
      process its share, and gives every sample an augmentation seed derived from (seed, epoch,
      position in the epoch's global order);
    - `SampleSeededDataset` reseeds the albumentations pipeline with that seed before it reads the
      sample, so an image's augmentation depends on where it falls, not on what ran before;
    - `ResumableDataLoader` counts the batches it has handed out this epoch and exposes
      `state_dict` / `load_state_dict`, which Lightning stores in the checkpoint ("loops" ->
      "fit_loop" -> "combined_loader") and restores before it iterates again: the resumed epoch
      skips the batches already trained on (indices only; no image is read for them).

    With one process or several, the global batch k of epoch e holds the same images with the same
    augmentation: batch b x p processes takes positions [k*b*p, (k+1)*b*p) of the epoch's order, so
    2 processes x batch 2 see exactly the images of 1 process x batch 4.

Preemption (SIGTERM, SIGUSR1)
    SIGTERM is what SLURM preemption, `docker stop` and Kubernetes send; SLURM sends SIGUSR1 (with
    `--signal=USR1@T`) before the time limit. Lightning only notes SIGTERM and leaves through a
    `SystemExit` of status 0 at the end of the batch, without a checkpoint; SIGUSR1 outside SLURM
    kills the process. `PreemptionCheckpoint`, which the CLI appends after every other callback,
    turns either signal into: the batch in progress finishes, last.ckpt is written at the same point
    of the step as the periodic checkpoints (so resuming from it is exact, as after SIGKILL), and
    `Preempted` is raised, which the CLI reports in one line with exit status 128 + the signal's
    number. A signal during validation stops at the next validation batch: last.ckpt then holds the
    step before the validation, which the resumed run validates again. Under SLURM with Lightning's
    auto-requeue (`SLURMEnvironment`), SIGUSR1 is Lightning's: it saves an hpc checkpoint and
    requeues the job, which resumes from it.

One run folder, one run
    `lock_run_folder` takes an exclusive `flock` on ``<checkpoint folder>/.detector.lock`` for the
    life of the training process and writes its pid there; a second training into the folder
    refuses in one line naming that pid. The kernel releases the lock when its process dies, however
    it dies, so a lock file left by a dead process (stale) is simply taken over.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from ..io import WriteError, atomic_path, write_stream, writing

__all__ = [
    "AtomicCheckpointIO", "lock_run_folder", "Preempted", "PreemptionCheckpoint", "check_training_checkpoint", "EpochSampler", "ResumableDataLoader", "SampleSeededDataset",
    "leaf_datasets", "resumable_train_loader", "sample_seed", "use_atomic_checkpoint_io",
]


# ---------------------------------------------------------------------------------- checkpoints
class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose save is atomic for local paths: temp file + fsync + os.replace.

    The temporary file is ``.<name>.<pid>.tmp`` next to the target (same file system, so the rename
    is atomic; its name does not end in ``.ckpt``, so nothing mistakes it for a checkpoint). Temp
    files left by a process that was killed while writing are removed at the next save.
    Remote paths (``s3://`` ...) fall back to Lightning's fsspec writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with writing(path), atomic_path(path, durable=True) as tmp:
            write_stream(tmp, lambda stream: torch.save(checkpoint, stream), name=path)


LOCK_NAME = ".detector.lock"


def lock_run_folder(folder) -> Any:
    """Lock `folder` for this process (see the module doc); returns the open lock file, which holds
    the lock until it is closed or the process ends. `WriteError` when another process holds it."""
    import fcntl

    folder = os.fspath(folder)
    path = os.path.join(folder, LOCK_NAME)
    with writing(path):
        os.makedirs(folder, exist_ok=True)
        handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise WriteError(folder, f"in use by another training (pid {owner}, lock {path}); wait for it to end "
                                 "or give this run another folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class Preempted(Exception):
    """Training stopped on a signal after writing a resumable checkpoint (see the module doc)."""

    def __init__(self, signum: int, step: int, path: str) -> None:
        self.signum, self.step, self.path = signum, step, path
        super().__init__(f"training stopped by {signal.Signals(signum).name} after step {step}; resume with "
                         f"--ckpt_path {path}")


class PreemptionCheckpoint(Callback):
    """On SIGTERM or SIGUSR1: last.ckpt at the end of the batch in progress, then `Preempted`.

    Must run after every other callback's on_train_batch_end (the CLI appends it), so the step's
    periodic checkpoint and records are written before it stops. SIGUSR1 is only taken where no
    one else handles it (Lightning's SLURM auto-requeue does).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.stopped: Preempted | None = None  # set once the checkpoint of a stop is written
        self._previous = None

    def _note(self, signum, frame) -> None:
        self.received = signum

    def on_train_start(self, trainer, pl_module) -> None:
        self.received = None
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            self._previous = signal.signal(signal.SIGUSR1, self._note)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGUSR1, self._previous)
            self._previous = None

    def _last_path(self, trainer) -> str:
        callback = trainer.checkpoint_callback
        folder = callback.dirpath if callback is not None and callback.dirpath else trainer.default_root_dir
        name = (callback.CHECKPOINT_NAME_LAST if callback is not None else "last") + ".ckpt"
        return os.path.join(folder, name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        signum = signal.SIGTERM if trainer.received_sigterm else self.received
        if signum is None:
            return
        raise self._save(trainer, int(signum))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore()
        if isinstance(exception, SIGTERMException) and self.stopped is None:  # SIGTERM during validation
            self._save(trainer, signal.SIGTERM)

    def _save(self, trainer, signum: int) -> Preempted:
        path = self._last_path(trainer)
        trainer.save_checkpoint(path)
        self.stopped = Preempted(signum, trainer.global_step, path)
        return self.stopped


def check_training_checkpoint(path) -> dict:
    """The training checkpoint at `path` (weights_only); `CheckpointError` saying what the file is otherwise.

    One classifier for every checkpoint the project reads: `detector.checkpoint.read_checkpoint`.
    """
    from detector.checkpoint import read_checkpoint

    return read_checkpoint(path, training=True)


def use_atomic_checkpoint_io(trainer) -> None:
    """Put `AtomicCheckpointIO` on `trainer` unless the config chose another CheckpointIO."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


# ---------------------------------------------------------------------------------- resumable data
def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at `position` of epoch `epoch`'s global order (32 bits)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, position]).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """This process's share of epoch e's order, as (index, augmentation seed) pairs; resumable.

    The order is `DistributedSampler`'s: ``randperm(n)`` seeded with seed + epoch (or 0..n-1 when
    shuffle is False), padded by repeating its start to a multiple of the number of processes,
    process r taking positions r, r + p, r + 2p, ... Each item is (dataset index, `sample_seed`)
    for its position in that padded global order. `skip` items are left out at the start of the
    next iteration (set by `ResumableDataLoader.load_state_dict`), then it is back to 0.

    Args:
        dataset: what is sampled (only its length is used).
        shuffle, seed: as `DistributedSampler`.
        num_replicas, rank: the processes; default from torch.distributed when it is initialised,
            else a single process.
    """

    def __init__(self, dataset: Dataset, *, shuffle: bool = True, seed: int = 0, num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        initialised = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialised else 1
        if rank is None:
            rank = dist.get_rank() if initialised else 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())  # this process's share of the padded global order
        skip, self.skip = self.skip, 0
        for k in range(skip, len(indices)):
            position = self.rank + k * self.num_replicas
            yield indices[k], sample_seed(self.seed, self.epoch, position)


def leaf_datasets(dataset: Dataset) -> list[Dataset]:
    """The datasets a (possibly nested) ConcatDataset is made of, in order; [dataset] for any other."""
    if isinstance(dataset, ConcatDataset):
        return [leaf for part in dataset.datasets for leaf in leaf_datasets(part)]
    return [dataset]


class SampleSeededDataset(Dataset):
    """`dataset` indexed by (index, seed): the augmentation pipeline is reseeded before each item.

    The pipelines are the ``transforms`` attributes of `dataset` (or of each part of a
    ConcatDataset) that have ``set_random_seed`` (`detector.data.transforms.DetectionTransform`).
    A plain int index reads the item without reseeding.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._pipelines = []
        for leaf in leaf_datasets(dataset):
            transforms = getattr(leaf, "transforms", None)
            if hasattr(transforms, "set_random_seed") and all(transforms is not p for p in self._pipelines):
                self._pipelines.append(transforms)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, seed = key
            for pipeline in self._pipelines:
                pipeline.set_random_seed(int(seed))
            return self.dataset[index]
        return self.dataset[key]


class ResumableDataLoader(DataLoader):
    """A DataLoader over an `EpochSampler` that records how far into the epoch it is.

    `state_dict()` -> {"epoch", "batches" (handed out this epoch), "samples" (global, all
    processes), "seed", "num_replicas", "batch_size"}; `load_state_dict` makes the next iteration
    continue after those samples. Lightning calls both (a DataLoader with these two methods is
    "stateful" to it). Resuming with another number of processes or batch size continues from
    the same global sample when it falls on a batch boundary, else from the last boundary before it.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSampler):
            raise TypeError("ResumableDataLoader needs an EpochSampler as its sampler")
        self._batches = 0  # handed out in the current epoch
        self._start = 0  # where the next iteration begins (in batches)

    def __iter__(self):
        start, self._start = self._start, 0
        self.sampler.skip = start * self.batch_size
        self._batches = start
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler = self.sampler
        return {"epoch": int(sampler.epoch), "batches": self._batches,
                "samples": self._batches * self.batch_size * sampler.num_replicas, "seed": int(sampler.seed),
                "num_replicas": int(sampler.num_replicas), "batch_size": int(self.batch_size)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.sampler
        sampler.seed = int(state.get("seed", sampler.seed))
        sampler.set_epoch(int(state["epoch"]))
        per_batch = self.batch_size * sampler.num_replicas
        samples = int(state.get("samples", state["batches"] * per_batch))
        if samples % per_batch:
            warnings.warn(f"resuming at global sample {samples}, which is not a multiple of the global batch "
                          f"{per_batch}: continuing from sample {samples - samples % per_batch}", stacklevel=2)
        self._start = samples // per_batch
        self._batches = self._start


def resumable_train_loader(dataset: Dataset, *, batch_size: int, seed: int, drop_last: bool, **loader_kwargs
                           ) -> ResumableDataLoader:
    """The shuffled training loader of `dataset` (see the module doc); other DataLoader kwargs pass through."""
    seeded = SampleSeededDataset(dataset)
    sampler = EpochSampler(seeded, shuffle=True, seed=seed)
    return ResumableDataLoader(seeded, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **loader_kwargs)
