"""The `detector` command: one entry point, a subcommand per task.

    detector train fit --config configs/synthetic.yaml
    detector evaluate --checkpoint runs/synthetic/checkpoints/best.ckpt --config configs/synthetic.yaml --out m.json --report report/
    detector predict --checkpoint CKPT --input photo.jpg --out preds/
    detector export --checkpoint CKPT --format onnx --out model.onnx
    detector ablate --preset quick --out docs/ablation/quick
    detector convert --from yolo --to coco --root shapes/data.yaml --split val --out shapes_val.json
    detector check-data --config configs/synthetic.yaml --out runs/check

Each subcommand runs the same code as scripts/<name>.py with the same arguments (`detector NAME
--help`). evaluate, predict and ablate live in the scripts of the source tree, which an editable
install (`make setup`, `pip install -e .`) keeps in reach.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _train(argv: list[str]) -> int:
    from .cli import run_cli

    return run_cli(argv)


def _export(argv: list[str]) -> int:
    from .export.command import main

    return main(argv)


def _convert(argv: list[str]) -> int:
    from .data.convert import main

    return main(argv, prog="detector convert")


def _check_data(argv: list[str]) -> int:
    from .check_data import main

    return main(argv, prog="detector check-data")


def _script(name: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        path = SCRIPTS / f"{name}.py"
        if not path.is_file():
            print(f"error: `detector {name}` runs {path}, which this installation lacks; "
                  "install from the source tree with `pip install -e .`", file=sys.stderr)
            return 2
        spec = importlib.util.spec_from_file_location(f"detector_script_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main(argv)

    return run


#: name -> (one-line summary, function of the remaining arguments returning the exit status)
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "train": ("train or validate with Lightning from a YAML config (fit, validate, ...)", _train),
    "evaluate": ("COCO box evaluation of a checkpoint or of a results file", _script("evaluate")),
    "predict": ("detect objects in an image or a folder (a checkpoint, or --onnx FILE)", _script("predict")),
    "export": ("write a checkpoint as ONNX or a torch.export program", _export),
    "convert": ("a dataset split from voc|yolo|csv|coco to coco|yolo", _convert),
    "check-data": ("what training will see: box statistics, anchor coverage, a suggestion", _check_data),
    "ablate": ("the loss study: train the variants of a preset, write the table and plots", _script("ablate")),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: detector COMMAND [ARGS ...]", "", "A RetinaNet detector: train it, evaluate it, use it.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (summary, _) in COMMANDS.items()]
    lines += ["", "`detector COMMAND --help` shows a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run `detector COMMAND ARGS...`; returns the exit status."""
    from .quiet import silence_third_party_noise

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    silence_third_party_noise()
    saved = sys.argv
    sys.argv = [f"detector {name}", *rest]  # argparse and LightningCLI name the program after argv[0]
    try:
        return COMMANDS[name][1](rest)
    finally:
        sys.argv = saved
