"""Silence the third-party messages that are not the user's business; every other message stays.

- LightningCLI's "args parameter ... not recommended" warning: our scripts hand it sys.argv[1:] on purpose.
- Lightning's "Tip: ... litlogger / litmodels" advertisements.
- Lightning's use of torch's deprecated pytree LeafSpec (a warning for Lightning's maintainers).
"""

from __future__ import annotations

import logging
import warnings

#: Warning messages (regular expressions matched at the start) that are silenced.
SILENCED_WARNINGS = (
    r"LightningCLI's args parameter is intended to run from within Python",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
#: Start of the Lightning info messages that are advertisements.
ADVERTISEMENT = "💡 Tip:"
#: The logger through which Lightning's rank_zero_info messages go.
LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"


def _not_an_advertisement(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(ADVERTISEMENT)


def silence_third_party_noise() -> None:
    """Install the filters (idempotent)."""
    for message in SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if _not_an_advertisement not in logger.filters:
        logger.addFilter(_not_an_advertisement)
