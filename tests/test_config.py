"""Config helpers (learning rates that follow the batch size, override quoting, group checks)
and the model and data configs: shared settings defined once and inherited."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tagger.cli.hydra_setup import bounded_dirname, check_group_choices, quote_path_values
from tagger.errors import ConfigError, find_config_error
from tagger.module import build_module
from tagger.optim import scaled_lr
from tagger.settings import check_settings
from tests.conftest import REPO_ROOT, compose_config


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


CONF = REPO_ROOT / "conf"
MODELS = sorted(path.stem for path in (CONF / "model").glob("*.yaml"))
DATA = sorted(path.stem for path in (CONF / "data").glob("*.yaml"))
SAMPLE_LEVEL = {"samplecnn", "rese2"}


def _leaves(node: object, prefix: str = "") -> dict[str, object]:
    """A nested dict as {dotted key: value} of its non-dict values."""
    if not isinstance(node, dict):
        return {prefix: node}
    leaves: dict[str, object] = {}
    for key, value in node.items():
        leaves |= _leaves(value, f"{prefix}.{key}")
    return leaves


def _own_and_inherited(path: Path) -> tuple[dict, dict[str, object]]:
    """A config file's own values, and the leaves its defaults list gives the same package."""
    own = OmegaConf.to_container(OmegaConf.load(path))
    inherited: dict[str, object] = {}
    for entry in own.pop("defaults", []):
        if entry != "_self_" and "@_global_" not in entry:
            base = path.parent / f"{entry.removesuffix('@_here_')}.yaml"
            base_own, base_inherited = _own_and_inherited(base)
            inherited |= base_inherited | _leaves(base_own)
    return own, inherited


CONFIGS = [*(CONF / "data").rglob("*.yaml"), *(CONF / "model").rglob("*.yaml")]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: str(path.relative_to(CONF)))
def test_no_model_or_data_config_repeats_what_it_inherits(path: Path) -> None:
    own, inherited = _own_and_inherited(path)
    copies = {key for key, value in _leaves(own).items() if inherited.get(key, object()) == value}
    assert not copies, f"{path.relative_to(CONF)} repeats {sorted(copies)} from its defaults"
    assert not path.read_text().startswith("# @package _global_")


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_and_data_config_inherit_the_shared_settings(model, data, tmp_path) -> None:
    cfg = compose_config("train", tmp_path, [f"model={model}", f"data={data}"])
    assert cfg.model._target_ == "tagger.module.TaggingModule"
    assert (cfg.model.aggregation, cfg.model.input_scale) == ("mean_logits", 32768.0)
    assert (cfg.data.batch_size, cfg.data.num_workers, cfg.data.on_device) == (10, 0, False)
    assert cfg.data.shuffle_seed == cfg.seed
    assert ("random_windows" in cfg.data) == (data != "synthetic")
    own = OmegaConf.load(CONF / "data" / f"{data}.yaml")
    shared = {"_target_", "aggregation", "input_scale"}  # defined once, in conf/model/base
    assert not shared & set(OmegaConf.load(CONF / "model" / f"{model}.yaml"))
    assert not {"batch_size", "num_workers", "on_device", "shuffle_seed"} & set(own)
    if model in SAMPLE_LEVEL:  # the model brings its windows, whatever the data
        assert (cfg.data.subclip_len, cfg.data.n_subclips) == (59049, 1)
    else:
        assert (cfg.data.subclip_len, cfg.data.n_subclips) == (
            own["subclip_len"] if data != "store" else None, own["n_subclips"]
        )  # a store's window follows from its meta.json: none without a store
    assert cfg.model.net.subclip_len == cfg.data.subclip_len


def test_a_sample_level_model_s_window_yields_to_the_command_line(tmp_path) -> None:
    cfg = compose_config("train", tmp_path, ["model=rese2", "data=coursework", "data.n_subclips=5"])
    assert (cfg.data.subclip_len, cfg.data.n_subclips, cfg.data.sample_rate) == (59049, 5, 12000)
    assert cfg.data.val_parts == ["c"]  # the coursework's own setting, not the base's null


@pytest.mark.parametrize("scheduler", ["cosine", "step"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizer_and_scheduler_configs_are_factories_the_module_calls(
    tmp_path, optimizer, scheduler
) -> None:
    cfg = compose_config("train", tmp_path, [f"optimizer={optimizer}", f"scheduler={scheduler}",
                                             "data.batch_size=40"])  # fmt: skip
    module = build_module(cfg, ["a", "b"])
    assert module.hparams.optimizer["_partial_"] is True  # stored as plain data, weights-only
    assert isinstance(module.hparams.optimizer, dict) and isinstance(module.hparams.scheduler, dict)
    configured = module.configure_optimizers()
    built, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert type(built).__name__.lower() == optimizer and schedule.optimizer is built
    assert built.param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr)  # ${scaled_lr:...}
    assert built.param_groups[0]["params"] == list(module.parameters())
    assert type(schedule).__module__ == "torch.optim.lr_scheduler"


def test_an_optimizer_config_that_is_not_a_factory_is_refused_in_one_line(tmp_path) -> None:
    cfg = compose_config("train", tmp_path, ["~optimizer._partial_"])
    with pytest.raises(Exception) as raised:  # Hydra's instantiate wraps it; train.py unwraps
        build_module(cfg, ["a"])
    assert str(find_config_error(raised.value)) == (
        "the optimizer config of 'torch.optim.SGD' must be a factory: "
        "add `_partial_: true` to it, as in conf/optimizer/*.yaml"
    )


@pytest.mark.parametrize(
    ("overrides", "geometry"),
    [
        ([], (256, 256)),
        (["stride=512"], (512, 512)),  # the length follows the stride
        (["length=1024", "stride=512"], (1024, 512)),
        (["conv.length=1024"], (1024, 256)),
        (["conv.stride=512"], (512, 512)),  # here too
        (["conv.length=1024", "conv.stride=512"], (1024, 512)),
    ],
)
@pytest.mark.parametrize("model", ["baseline", "wide", "hybrid", "spectrogram"])
def test_one_name_for_the_first_layer_from_the_command_line_to_the_network(
    tmp_path, model, overrides, geometry
) -> None:
    cfg = compose_config("train", tmp_path, [f"model={model}", *overrides])
    assert (cfg.conv.length, cfg.conv.stride) == geometry
    assert (cfg.model.net.conv_length, cfg.model.net.conv_stride) == geometry
    net = instantiate(cfg.model.net, num_tags=3)
    if model == "spectrogram":  # frame length and hop: the same hyperparameters
        built = (net.front_end.window_length, net.front_end.hop_length)
    else:
        first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv1d))
        built = (first.kernel_size[0], first.stride[0])
    assert built == geometry


def test_one_callback_writes_last_ckpt_at_epochs_and_every_n_steps(tmp_path) -> None:
    overrides = ["callbacks.step_checkpoint.every_n_train_steps=3"]  # docs/training.md's override
    cfg = compose_config("train", tmp_path, overrides)
    checkpoints = [instantiate(node) for node in cfg.callbacks.values()
                   if "Checkpoint" in node._target_]  # fmt: skip
    writers = [c for c in checkpoints if c.save_last or c.filename == "last"]
    assert [type(c).__name__ for c in writers] == ["LastCheckpoint"]
    assert writers[0].every_n_train_steps == 3 and writers[0].every_n_epochs == 1
    (best,) = [c for c in checkpoints if c not in writers]
    assert (best.monitor, best.filename) == ("val/auc", "epoch{epoch:03d}-auc{val/auc:.4f}")
    bad = compose_config("train", tmp_path, ["callbacks.step_checkpoint.every_n_train_steps=-1"])
    with pytest.raises(Exception) as raised:
        instantiate(bad.callbacks.step_checkpoint)
    assert "every_n_train_steps must be a whole number of steps >= 0" in str(
        find_config_error(raised.value)
    )
    with pytest.raises(ConfigError, match="every_n_train_steps must be a whole number from 0"):
        check_settings(bad)  # refused by the schema before anything is built
