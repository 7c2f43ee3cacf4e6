import pytest
import torch

import detector
from detector.checkpoint import CheckpointError


def test_save_load_predict_round_trip(tmp_path):
    model = detector.build_retinanet(num_classes=3, backbone="resnet18", fpn_channels=32, head_convs=1,
                                     min_size=128, max_size=192, prior_prob=0.3)
    path = detector.save_detector(model, tmp_path / "m.ckpt")
    loaded = detector.load_detector(path)
    assert not loaded.training and loaded.config == model.config
    images = [torch.rand(3, 100, 150), torch.rand(3, 120, 90)]
    model.eval()
    a, b = model.predict(images), loaded.predict(images)
    for da, db, img in zip(a, b, images):
        torch.testing.assert_close(da["boxes"], db["boxes"])
        assert len(da["boxes"]) > 0
        h, w = img.shape[-2:]
        assert da["boxes"][:, 2].max() <= w + 1e-4 and da["boxes"][:, 3].max() <= h + 1e-4
        assert set(da) == {"boxes", "scores", "labels"} and da["labels"].dtype == torch.int64


def test_predict_rejects_bad_input():
    model = detector.build_retinanet(num_classes=3, backbone="resnet18", fpn_channels=32, head_convs=1)
    with pytest.raises(ValueError, match="at least one image"):
        model.predict([])
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        model.predict([torch.rand(1, 10, 10)])
    with pytest.raises(ValueError, match="float"):
        model.predict([torch.zeros(3, 10, 10, dtype=torch.uint8)])


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        detector.load_detector(tmp_path / "missing.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a detector checkpoint: a text file"):
        detector.load_detector(bad)
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not a detector checkpoint"):
        detector.load_detector(other)


def test_prediction_with_drawn_images_does_not_import_lightning(tmp_path):
    """The model is plain PyTorch: loading it, running it on a folder and drawing its boxes needs no Lightning."""
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    model = detector.build_retinanet(num_classes=2, backbone="resnet18", fpn_channels=16, head_convs=1,
                                     min_size=64, max_size=64, prior_prob=0.5)
    detector.save_detector(model, tmp_path / "m.ckpt", class_names=["a", "b"])
    (tmp_path / "in").mkdir()
    Image.new("RGB", (80, 60), (120, 30, 200)).save(tmp_path / "in" / "x.png")
    code = ("import sys; from detector.predict import predict_paths; "
            f"out = predict_paths({str(tmp_path / 'm.ckpt')!r}, {str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r}, "
            "min_score=0.0); "
            "print(sorted(m for m in sys.modules if m == 'lightning' or m.startswith(('lightning.', 'pytorch_lightning'))))")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert list((tmp_path / "out").glob("*.json")) and list((tmp_path / "out").glob("x*"))
