"""Command-line entry points (train, eval, the ``tagger`` command)."""

import logging
import warnings

# Lightning advertises its cloud logger on every Trainer it builds; keep run logs to the run.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not record.getMessage().startswith("💡 Tip")
)

# Deprecation notices from inside the libraries, which a user of tagger cannot act on; each
# filtered by its message and the module that triggers it, so any other warning still shows.
#: (message regex, category, module regex of the code that triggers the warning)
LIBRARY_NOTICES: list[tuple[str, type[Warning], str]] = [
    # torch 2.10+ deprecates LeafSpec, which Lightning's batch flattening still builds
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"lightning\.pytorch\.utilities\._pytree",
    ),
]
for message, category, module in LIBRARY_NOTICES:
    warnings.filterwarnings("ignore", message=message, category=category, module=module)
