#: A tiny model and a short schedule on top of configs/synthetic.yaml.
TINY = [
    "--model.detector.fpn_channels", "16", "--model.detector.head_convs", "1",
    "--data.min_size", "128", "--data.max_size", "128", "--data.batch_size", "4", "--data.num_workers", "0",
    "--trainer.precision", "32-true", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]
