"""The study's `--section.key VALUE` overrides, read by the training config's own jsonargparse parser.

An override applies to every variant of a study (e.g. `--data.root DIR`); its key and value are
checked against detector.cli.training_parser's schema, so a typo or a wrong type is a one-line
StudyError (the parser's own message) before anything trains. Keys the study sets itself
(MANAGED_KEYS) are refused.
"""

from __future__ import annotations

import functools
from typing import Any

from .presets import StudyError

#: Keys the study sets itself: overriding them for the whole study would break its promises.
MANAGED_KEYS: dict[str, str] = {
    "trainer.max_steps": "--max-steps",
    "trainer.val_check_interval": "--evals",
    "trainer.check_val_every_n_epoch": "--evals",
    "trainer.logger": "(the study writes OUT/tb/<variant>)",
    "trainer.default_root_dir": "--out",
    "trainer.callbacks": "(the study adds its recorder)",
    "model.milestones": "study.milestone_fractions in the preset",
    "model.detector.cls_loss": "--variants",
    "model.detector.alpha": "--variants",
    "model.detector.gamma": "--variants",
    "model.detector.prior_prob": "--variants",
    "model.detector.ohem_neg_pos_ratio": "--variants (ohem_1to<R>)",
    "checkpoint": "(the study saves OUT/checkpoints/<variant>/final.pt)",
}


def parse_overrides(tokens: list[str]) -> list[tuple[str, Any]]:
    """(dotted key, typed value) of `--section.key VALUE` / `--section.key=VALUE` tokens, read by the
    training config's own jsonargparse parser (detector.cli.training_parser): a key the config lacks,
    a value of the wrong type or a key the study sets itself is a one-line StudyError."""
    if not tokens:
        return []  # no Lightning import for a study without overrides
    from jsonargparse import ArgumentError, Namespace

    for token in tokens:
        if token.startswith("--") and (refusal := _managed(token[2:].partition("=")[0])):
            raise StudyError(refusal)
    try:
        given = _override_parser().parse_args(list(tokens), defaults=False)
    except ArgumentError as err:  # the parser's message, its first two lines (key, reason) as one
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise StudyError(f"config overrides: {' '.join(lines[:2])}") from None
    return [(key, _plain(value, Namespace)) for key, value in given.items(branches=False)]


@functools.lru_cache(maxsize=1)
def _override_parser():
    from ..cli import training_parser
    from ..quiet import silence_third_party_noise

    silence_third_party_noise()
    return training_parser()


def _plain(value: Any, namespace: type) -> Any:
    """A parsed value as the YAML/JSON of a config file holds it (class specs inside lists are Namespaces)."""
    if isinstance(value, namespace):
        return value.as_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v, namespace) for v in value]
    return value


def _managed(key: str) -> str | None:
    """The refusal of a key the study sets itself, or None."""
    for managed, instead in MANAGED_KEYS.items():
        if key == managed or key.startswith(managed + "."):
            return f"--{key} is set by the study; use {instead}"
    return None


def set_key(config: dict, dotted: str, value: Any) -> None:
    """config["a"]["b"]["c"] = value for "a.b.c", making the missing levels."""
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


__all__ = ["MANAGED_KEYS", "parse_overrides", "set_key"]
