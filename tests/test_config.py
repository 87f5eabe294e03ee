"""Config helpers: learning rates that follow the batch size, override quoting, group checks."""

from __future__ import annotations

import math

import pytest

from tagger.config import (
    ConfigError,
    bounded_dirname,
    check_group_choices,
    quote_path_values,
    scaled_lr,
)
from tests.conftest import compose_config


def test_scaled_lr_rules() -> None:
    assert scaled_lr(0.1135, 10, "linear") == 0.1135  # the paper's batch: unchanged, exactly
    assert scaled_lr(0.1135, 64, "linear") == pytest.approx(0.1135 * 6.4)
    assert scaled_lr(0.003, 256, "sqrt") == pytest.approx(0.003 * math.sqrt(25.6))
    assert scaled_lr(0.003, 256, "none") == 0.003
    with pytest.raises(ConfigError, match="linear, sqrt or none"):
        scaled_lr(0.1, 64, "cubic")


@pytest.mark.parametrize(
    ("optimizer", "batch", "lr"),
    [
        ("sgd", 10, 0.1135),
        ("sgd", 64, 0.1135 * 6.4),
        ("adam", 40, 0.001 * 2),
        ("adamw", 64, 0.003 * math.sqrt(6.4)),
    ],
)
def test_optimizer_configs_scale_lr_with_the_batch(tmp_path, optimizer, batch, lr) -> None:
    cfg = compose_config("train", tmp_path, [f"optimizer={optimizer}", f"data.batch_size={batch}"])
    assert cfg.optimizer.lr == pytest.approx(lr)
    fixed = compose_config("train", tmp_path, [f"optimizer={optimizer}", "optimizer.lr=0.05",
                                               f"data.batch_size={batch}"])  # fmt: skip
    assert fixed.optimizer.lr == 0.05  # an explicit lr is taken as it is


def test_values_with_equals_signs_are_quoted_for_hydra() -> None:
    assert quote_path_values(["ckpt_path=/o/0_conv.length=256,seed=1/last.ckpt", "model=a,b"]) == [
        "ckpt_path='/o/0_conv.length=256,seed=1/last.ckpt'",
        "model=a,b",
    ]


def test_group_choices_are_checked_one_by_one() -> None:
    check_group_choices(["model=baseline,wide", "scheduler=null", "hydra/launcher=anything"])
    with pytest.raises(ConfigError, match="unknown optimizer 'sgdd'"):
        check_group_choices(["optimizer=sgd,sgdd"])


def test_long_job_names_are_cut_but_stay_distinct() -> None:
    short = "conv.length=256"
    assert bounded_dirname(short) == short
    a, b = "x=1," * 100 + "a", "x=1," * 100 + "b"
    assert len(bounded_dirname(a)) <= 160 and bounded_dirname(a) != bounded_dirname(b)
