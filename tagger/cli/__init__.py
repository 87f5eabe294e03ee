"""Command-line entry points (train, eval, the ``tagger`` command)."""

import logging

# Lightning advertises its cloud logger on every Trainer it builds; keep run logs to the run.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not record.getMessage().startswith("💡 Tip")
)
