"""Loading never executes what a file holds: checkpoints through torch.load(weights_only=True), YAML
through safe loaders, data files as data only.

Also covered elsewhere (not repeated here):
- a COCO file_name that is absolute or leads outside the image root is refused, never read:
  tests/data/test_coco_dataset.py::test_file_name_escaping_root_is_refused;
- a VOC image id that escapes its folder: tests/data/test_voc_dataset.py::test_image_id_escaping_the_folder_is_refused;
- archive members that would extract outside the target (tar/zip "../", absolute names, links):
  tests/data/test_download.py::test_extract_tar_and_zip_once_and_refuse_escapes.
"""

from __future__ import annotations

import time

import pytest
import torch

import detector
from detector.checkpoint import CheckpointError
from detector.cli import run_cli
from detector.data import COCODetection
from detector.data.errors import DatasetError
from detector.data.voc import VOCDetection
from detector.training.datamodule import datamodule_from_config
from tests.data.fixtures import load_script, make_voc

from .helpers import Payload, fit_args, load


@pytest.fixture(scope="module")
def trained(tiny_synthetic, tmp_path_factory):
    """last.ckpt of a 2-step run (the real thing the CLI writes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("trained")
    try:
        assert run_cli(fit_args(tiny_synthetic, run_dir, "--trainer.max_steps", 2, "--trainer.limit_val_batches", 0,
                                "--checkpoint.monitor", "null", "--checkpoint.save_top_k", 0)) == 0
    finally:
        torch.set_num_threads(before)
    return run_dir / "ckpt" / "last.ckpt"


@pytest.fixture
def evil(tmp_path, trained):
    """A checkpoint with the keys of a real one plus an object whose unpickling runs code."""
    marker = tmp_path / "pwned"
    state = load(trained)
    state["detector_config"] = {**state["detector_config"], "payload": Payload(marker)}
    path = tmp_path / "evil.ckpt"
    torch.save(state, path)
    return path, marker


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def test_training_checkpoints_hold_only_what_weights_only_admits(trained):
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(trained)) == []
    state = torch.load(trained, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2 and "optimizer_states" in state and "loops" in state
    assert detector.load_detector(trained).config.num_classes == 5


def test_a_code_carrying_checkpoint_is_refused_by_every_entry_point(evil, tmp_path, capsys, tiny_synthetic):
    path, marker = evil
    with pytest.raises(CheckpointError, match=r"not a detector checkpoint: it holds Python objects \(posix\.mkdir\).*refused"):
        detector.load_detector(path)

    with pytest.raises(SystemExit) as exit_info:  # scripts/train.py fit --ckpt_path evil.ckpt
        run_cli(fit_args(tiny_synthetic, tmp_path / "run", "--ckpt_path", path))
    assert exit_info.value.code == 2
    assert f"{path}: not a detector checkpoint: it holds Python objects (posix.mkdir)" in _one_error_line(capsys)

    assert load_script("evaluate").main(["--checkpoint", str(path), "--config", "configs/synthetic.yaml",
                                         "--data-root", str(tiny_synthetic)]) == 2
    assert "it holds Python objects (posix.mkdir)" in _one_error_line(capsys)

    with pytest.raises(SystemExit) as exit_info:
        load_script("predict").main(["--checkpoint", str(path), "--input", str(tiny_synthetic / "images"),
                                     "--out", str(tmp_path / "pred")])
    assert exit_info.value.code == 2 and "it holds Python objects (posix.mkdir)" in _one_error_line(capsys)
    assert not marker.exists()  # nothing ran


@pytest.mark.parametrize("keep", [0, 100, 0.5])
def test_truncated_or_empty_checkpoints_are_one_line_errors(trained, tmp_path, capsys, tiny_synthetic, keep):
    data = trained.read_bytes()
    path = tmp_path / "broken.ckpt"
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    found = "the file is empty" if keep == 0 else r"a truncated or damaged zip archive"
    with pytest.raises(CheckpointError, match=f"broken.ckpt: not a detector checkpoint: {found}"):
        detector.load_detector(path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(fit_args(tiny_synthetic, tmp_path / "run", "--ckpt_path", path))
    assert exit_info.value.code == 2 and "broken.ckpt: not a detector checkpoint" in _one_error_line(capsys)


def test_a_missing_resume_checkpoint_is_one_line(tmp_path, capsys, tiny_synthetic):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(fit_args(tiny_synthetic, tmp_path / "run", "--ckpt_path", tmp_path / "nope.ckpt"))
    assert exit_info.value.code == 2 and "nope.ckpt: no such checkpoint file" in _one_error_line(capsys)


PYTHON_TAG = "seed_everything: !!python/object/apply:os.mkdir [{marker}]\n"


def test_yaml_python_tags_are_refused_by_the_training_cli(tmp_path, capsys):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(PYTHON_TAG.format(marker=marker))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 2
    assert "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.mkdir'" in (
        capsys.readouterr().err)
    assert not marker.exists()


def test_yaml_python_tags_are_refused_by_evaluate_config(tmp_path):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(PYTHON_TAG.format(marker=marker) + "data:\n  root: x\n")
    with pytest.raises(DatasetError, match="malformed YAML"):
        datamodule_from_config(config)
    assert not marker.exists()


def test_coco_and_results_json_nested_too_deeply_is_an_error_not_a_crash(tmp_path):
    from detector.evaluation import EvaluationError, load_coco_gt

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match="nested too deeply"):
        COCODetection(deep, tmp_path)
    with pytest.raises(EvaluationError, match="nested too deeply"):
        load_coco_gt(deep)


@pytest.mark.parametrize("name, xml, message", [
    ("external entity (XXE)",
     '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><annotation>'
     "<filename>000001.jpg</filename><object><name>&xxe;</name><difficult>0</difficult><bndbox><xmin>1</xmin>"
     "<ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>",
     "undefined entity"),
    ("billion laughs",
     '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">'
     + "".join(f'<!ENTITY lol{i} "' + f"&lol{i - 1};" * 10 + '">' for i in range(1, 10))
     + "]><annotation><filename>&lol9;</filename></annotation>",
     "amplification"),
])
def test_voc_xml_entities_are_not_expanded_or_fetched(tmp_path, name, xml, message):
    devkit = make_voc(tmp_path, {"000001": {"size": (32, 32), "objects": [("dog", (1, 1, 10, 10))]}},
                      {"trainval": ["000001"]})
    (devkit / "VOC2007" / "Annotations" / "000001.xml").write_text(xml)
    start = time.perf_counter()
    with pytest.raises(DatasetError, match=f"000001.xml: malformed XML .*{message}"):
        VOCDetection(devkit, "2007", "trainval")
    assert time.perf_counter() - start < 5
