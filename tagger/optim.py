"""The learning-rate rule of the optimizer configs (``${scaled_lr:LR,BATCH,RULE}`` in
``conf/optimizer/*.yaml``; the command line registers it as a resolver)."""

from __future__ import annotations

from tagger.errors import ConfigError

#: The batch size, in clips, that the optimizer configs' learning rates are given for.
REFERENCE_BATCH = 10


def scaled_lr(base_lr: float, batch_size: int, rule: str) -> float:
    """A learning rate given for batches of ``REFERENCE_BATCH`` clips, scaled to ``batch_size``.

    ``linear``: lr x batch / 10 (Goyal et al. 2017, for SGD); ``sqrt``: lr x sqrt(batch / 10)
    (adaptive optimizers); ``none``: unchanged. At batch 10 every rule gives ``base_lr``.
    """
    ratio = batch_size / REFERENCE_BATCH
    factors = {"linear": ratio, "sqrt": ratio**0.5, "none": 1.0}
    if rule not in factors:
        raise ConfigError(f"learning-rate scaling rule must be linear, sqrt or none, not {rule!r}")
    return base_lr * factors[rule]
