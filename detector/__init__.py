"""detector: a RetinaNet (focal loss) dense detector, its training and a loss study.

    import detector
    model = detector.load_detector("runs/synthetic/checkpoints/best.ckpt")
    detections = model.predict([image])  # image: (3, H, W) float in [0, 1]
"""

from .checkpoint import CheckpointError, load_detector, save_detector
from .model import RetinaNet, RetinaNetConfig, build_retinanet

__all__ = ["CheckpointError", "RetinaNet", "RetinaNetConfig", "build_retinanet", "load_detector", "save_detector"]
