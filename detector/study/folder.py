"""A study's output folder belongs to one set of settings, and says how it was made.

OUT/study.json holds the shared settings (Study.shared), their fingerprint and every command that
trained into the folder. `check_same_settings` refuses to train into a folder made with other
settings (steps, data, image size, overrides), so that every row of a table was trained alike.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .presets import StudyError
from .records import write_atomic
from .shards import is_shard_child

if TYPE_CHECKING:
    from .plan import Study


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def check_same_settings(study: Study) -> None:
    """Refuse an output folder that holds results made with other shared settings."""
    path = study.out / "study.json"
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    if stored.get("fingerprint") == study.fingerprint:
        return
    old, new = _flatten(stored.get("shared", {})), _flatten(json.loads(json.dumps(study.shared(), default=str)))
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    raise StudyError(
        f"{study.out} holds a study made with other settings ({'; '.join(diffs[:4]) or 'fingerprint differs'}); "
        "choose another --out, or delete that folder"
    )


def recorded_commands(path: Path) -> list[str]:
    """The "commands" list of a JSON record file (study.json, lab.json); [] when it has none."""
    try:
        return list(json.loads(Path(path).read_text(encoding="utf-8")).get("commands", []))
    except (OSError, json.JSONDecodeError):
        return []


def commands_with(path: Path, command: list[str]) -> list[str]:
    """The "commands" list of a JSON record file, with `command` appended unless it is the last one.

    A shard child (detector.study.shards) adds nothing: its parent records the command.
    """
    commands = recorded_commands(path)
    text = " ".join(shlex.quote(c) for c in command)
    if text and (not commands or commands[-1] != text) and not is_shard_child():
        commands.append(text)
    return commands


def write_study_json(study: Study) -> None:
    """OUT/study.json: the shared settings, their fingerprint, and every command that trained here."""
    path = study.out / "study.json"
    commands = commands_with(path, study.command)
    data = {
        "preset": str(study.preset), "commands": commands, "fingerprint": study.fingerprint,
        "variants": study.settings["variants"], "overrides": [f"--{k} {v}" for k, v in study.overrides],
        "shared": json.loads(json.dumps(study.shared(), default=str)),
    }  # fmt: skip
    write_atomic(path, json.dumps(data, indent=2) + "\n")
    gitignore = study.out / ".gitignore"
    if not gitignore.exists():
        write_atomic(gitignore, "# trained models: large, and remade by the study\ncheckpoints/\n")


__all__ = ["check_same_settings", "commands_with", "recorded_commands", "write_study_json"]
