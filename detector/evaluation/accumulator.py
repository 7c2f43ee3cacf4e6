"""Collects detections over a validation loop, each image once, and evaluates them with COCO AP.

Shape symbols: N images in a batch, D detections in one image.

No Lightning here: a LightningModule calls `update` in ``validation_step``, gathers `state()`
across processes (e.g. ``torch.distributed.all_gather_object``), `merge`s the gathered states and
calls `compute` in ``on_validation_epoch_end``, then `reset`.

Why de-duplicate: a ``DistributedSampler`` pads the dataset so that every process gets the same
number of samples, by repeating images. Counting a repeated image twice would count its ground
truth twice (lower recall) and its detections twice, so each image id is kept once (the first
time it is seen; repeats are the same image through the same deterministic eval pipeline).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from .coco import EvaluationError, detections_to_coco_results, evaluate_coco
from .results import ids_array, to_numpy


class CocoDetectionAccumulator:
    """Per-image detections keyed by COCO image id, evaluated over the images seen.

    Detections are stored on the CPU as numpy: boxes (D, 4) float32 XYXY in original image
    pixels, scores (D,) float32, labels (D,) int64.
    """

    def __init__(self) -> None:
        self._detections: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        """The number of distinct images seen."""
        return len(self._detections)

    @property
    def image_ids(self) -> list[int]:
        """The distinct image ids seen, sorted."""
        return sorted(self._detections)

    def reset(self) -> None:
        self._detections.clear()

    def update(self, image_ids: Sequence[int] | Any, detections: Sequence[Mapping[str, Any]]) -> None:
        """Add a batch.

        Args:
            image_ids: (N,) COCO image ids (ints, a tensor or an array).
            detections: N dicts {"boxes" (D, 4) XYXY in the original image's pixels, "scores"
                (D,), "labels" (D,) in 0..K-1}, torch tensors or numpy arrays.

        An image id already seen is skipped (see the module docstring).
        """
        ids = ids_array(image_ids).tolist()
        if len(ids) != len(detections):
            raise EvaluationError(f"{len(detections)} detection dicts but {len(ids)} image ids")
        for image_id, det in zip(ids, detections):
            if image_id in self._detections:
                continue
            boxes = to_numpy(det["boxes"]).astype(np.float32).reshape(-1, 4)  # (D, 4)
            scores = to_numpy(det["scores"]).astype(np.float32).reshape(-1)  # (D,)
            labels = to_numpy(det["labels"]).astype(np.int64).reshape(-1)  # (D,)
            self._detections[image_id] = (boxes, scores, labels)

    def state(self) -> dict[str, Any]:
        """A picklable snapshot (plain lists and numpy arrays) to gather across processes."""
        ids = list(self._detections)
        return {
            "image_ids": ids,
            "boxes": [self._detections[i][0] for i in ids],
            "scores": [self._detections[i][1] for i in ids],
            "labels": [self._detections[i][2] for i in ids],
        }

    def merge(self, states: Iterable[Mapping[str, Any]]) -> None:
        """Add the images of other states (e.g. every process's, own included), each id once."""
        for st in states:
            self.update(
                st["image_ids"],
                [{"boxes": b, "scores": s, "labels": l} for b, s, l in zip(st["boxes"], st["scores"], st["labels"])],
            )

    def results(self, label_to_category_id: Mapping[int, int] | Sequence[int]) -> list[dict]:
        """The COCO results entries of every image seen (sorted by image id)."""
        ids = self.image_ids
        dets = [dict(zip(("boxes", "scores", "labels"), self._detections[i])) for i in ids]
        return detections_to_coco_results(dets, ids, label_to_category_id)

    def compute(
        self,
        coco_gt: COCO,
        label_to_category_id: Mapping[int, int] | Sequence[int],
        **evaluate_kwargs: Any,
    ) -> dict[str, Any]:
        """`evaluate_coco` over exactly the images seen (not the whole ground truth).

        Images of ``coco_gt`` that no process evaluated are left out, so a partial validation
        pass (e.g. ``limit_val_batches``) gives the AP of that part rather than counting the
        unseen images' ground truth as missed. ``evaluate_kwargs`` go to `evaluate_coco`
        (per_class, backend, quiet, print_summary).

        Raises:
            EvaluationError: no image seen, or an image id not in ``coco_gt``.
        """
        if not self._detections:
            raise EvaluationError("no images were accumulated: nothing to evaluate")
        return evaluate_coco(
            coco_gt, self.results(label_to_category_id), image_ids=self.image_ids, **evaluate_kwargs
        )
