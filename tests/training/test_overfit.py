"""A short overfit on two images reaches AP > 0.9: the model, loss and decoding fit together."""

import pytest
import torch

from detector.data import COCODetection
from detector.data.collate import DetectionCollator
from detector.data.transforms import build_transforms
from detector.evaluation import CocoDetectionAccumulator
from detector.evaluation.inference import detect_collated
from detector.model import build_retinanet


@pytest.mark.slow
def test_overfit_two_images(tiny_synthetic):
    torch.manual_seed(0)
    dataset = COCODetection(tiny_synthetic / "train.json", tiny_synthetic / "images",
                            transforms=build_transforms(False, 128, 128), drop_empty=True)
    batch = DetectionCollator(128)([dataset[0], dataset[1]])
    assert batch["valid"].sum() >= 2
    model = build_retinanet(num_classes=dataset.num_classes, backbone="resnet18", fpn_channels=32, head_convs=2,
                            anchor_sizes=(16, 32, 64, 128, 256), head_group_norm=True,
                            min_size=128, max_size=128)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()
    for _ in range(150):
        out = model(batch["images"])
        parts, _ = model.loss(out, batch["boxes"], batch["labels"], batch["valid"])
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
    model.eval()
    acc = CocoDetectionAccumulator()
    acc.update(batch["image_ids"], detect_collated(model, batch))  # the evaluation loop's step
    metrics = acc.compute(dataset.coco_gt(), dataset.label_to_category_id, per_class=False)
    assert metrics["AP"] > 0.9, metrics
