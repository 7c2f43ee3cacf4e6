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
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from ..io import atomic_path

__all__ = [
    "AtomicCheckpointIO", "check_training_checkpoint", "EpochSampler", "ResumableDataLoader", "SampleSeededDataset",
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
        with atomic_path(path, durable=True) as tmp:
            torch.save(checkpoint, tmp)


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
