"""Whole training runs, in-process on tiny synthetic data: what a run writes and restores."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from lightning import Callback, LightningModule, Trainer
from sklearn.metrics import roc_auc_score

from tagger.evaluate import evaluate
from tagger.module import build_module, load_trained
from tagger.train import train
from tests.conftest import compose_config

TWO_EPOCHS = ["trainer.max_epochs=2", "optimizer=adamw"]


class RecordEpochLimit(Callback):
    """Keeps the epoch limit of the Trainer it runs in, in ``RecordEpochLimit.seen``."""

    seen: ClassVar[list[int | None]] = []

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        RecordEpochLimit.seen.append(trainer.max_epochs)


def results(summary: dict) -> dict[str, float]:
    """A run's final metrics without wall-clock timings."""
    return {k: v for k, v in summary["final"].items() if k != "train/step_time"}


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory) -> dict:
    """One 2-epoch run shared by the tests that only read what it wrote."""
    from tests.conftest import TINY

    run_dir = tmp_path_factory.mktemp("two_epochs")
    return train(compose_config("train", run_dir, [*TINY, *TWO_EPOCHS]))


def test_metrics_json_describes_the_run(two_epoch_run: dict) -> None:
    summary = two_epoch_run
    written = json.loads((Path(summary["run_dir"]) / "metrics.json").read_text())
    assert written["final"]["val/auc"] == pytest.approx(summary["final"]["val/auc"])
    assert written["dataset"]["name"] == "synthetic" and written["dataset"]["real_music"] is False
    assert (written["train_clips"], written["val_clips"], written["test_clips"]) == (60, 30, 30)
    assert written["tag_names"][:3] == ["bass", "treble", "chord"]
    assert written["epochs"] == 2 and written["global_step"] == 2 * 6
    for key in ("train/auc", "train/loss", "val/auc", "val/pr_auc", "val/loss"):
        assert 0 <= written["final"][key] < 10, key
    assert written["best"]["val/auc"] >= written["final"]["val/auc"] - 1e-9
    assert Path(written["checkpoints"]["best"]).is_file()
    last = Path(written["checkpoints"]["last"])
    assert last.name == "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 12  # the end of the run
    assert 0.5 <= written["test"]["auc"] <= 1 and written["wall_time_s"] > 0
    assert written["config"]["optimizer"]["_target_"] == "torch.optim.AdamW"


def test_tensorboard_holds_step_loss_and_epoch_auc(two_epoch_run: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(two_epoch_run["run_dir"]) / "tensorboard")).Reload()
    scalars = events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("train/loss")] == list(range(12))  # every step
    assert len(events.Scalars("val/auc")) == 2
    for tag in ("train/step_time", "train/auc", "val/loss", "val/pr_auc", "lr-AdamW"):
        assert tag in scalars, tag


def test_same_seed_gives_the_same_metrics(train_config, two_epoch_run: dict) -> None:
    again = train(train_config(*TWO_EPOCHS))
    assert results(again) == results(two_epoch_run)
    assert again["test"]["auc"] == two_epoch_run["test"]["auc"]


@pytest.mark.slow  # two more trainings
def test_resume_from_last_checkpoint_is_exact(train_config, two_epoch_run: dict) -> None:
    first = train(train_config(*TWO_EPOCHS, "trainer.max_epochs=1", run="first"))
    resumed = train(
        train_config(*TWO_EPOCHS, f"ckpt_path={first['checkpoints']['last']}", run="resumed")
    )
    assert resumed["epochs"] == 2 and resumed["global_step"] == 12
    assert results(resumed) == results(two_epoch_run)
    assert resumed["best"] == two_epoch_run["best"]  # the best epoch before the resume counts
    assert Path(resumed["checkpoints"]["last"]).parent == Path(first["checkpoints"]["last"]).parent
    straight, _ = load_trained(two_epoch_run["checkpoints"]["last"])
    continued, _ = load_trained(resumed["checkpoints"]["last"])
    for (name, a), b in zip(
        straight.state_dict().items(), continued.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_validate_returns_the_scores_that_the_summary_holds(two_epoch_run: dict) -> None:
    from hydra.utils import instantiate

    model, run_config = load_trained(two_epoch_run["checkpoints"]["last"])  # after epoch 2's val
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (returned,) = trainer.validate(model, datamodule=instantiate(run_config["data"]))
    summary = two_epoch_run["val"]
    assert returned["val/auc"] == summary["auc"] and returned["val/pr_auc"] == summary["pr_auc"]
    for figure in ("auc", "pr_auc"):
        prefix = f"val_tag_{figure}/"
        per_tag = {k.removeprefix(prefix): v for k, v in returned.items() if k.startswith(prefix)}
        scored = {k: v for k, v in summary[f"per_tag_{figure}"].items()
                  if k not in summary["skipped_tags"]}  # fmt: skip
        assert per_tag == scored and len(per_tag) == len(two_epoch_run["tag_names"])


def test_eval_rebuilds_from_the_checkpoint_and_matches_training(tmp_path, two_epoch_run) -> None:
    cfg = compose_config(
        "eval",
        tmp_path / "eval",
        [f"ckpt_path={two_epoch_run['checkpoints']['last']}", "split=val",
         "trainer.enable_progress_bar=false"],
    )  # fmt: skip
    summary = evaluate(cfg)
    assert summary["val"]["auc"] == pytest.approx(two_epoch_run["final"]["val/auc"], abs=1e-6)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["val"]["auc"] == summary["val"]["auc"] and written["val_clips"] == 30

    with (tmp_path / "eval" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    tags = two_epoch_run["tag_names"]
    assert len(rows) == 30 and rows[0]["clip_id"] == "synthetic/val/00000"
    truth = np.array([[tag in row["true_tags"].split(";") for tag in tags] for row in rows])
    scores = np.array([[float(row[tag]) for tag in tags] for row in rows])
    scorable = truth.any(0) & ~truth.all(0)
    recomputed = roc_auc_score(truth[:, scorable], scores[:, scorable])
    assert recomputed == pytest.approx(summary["val"]["auc"], abs=1e-4)


def test_eval_defaults_to_the_test_split(tmp_path, two_epoch_run) -> None:
    cfg = compose_config(
        "eval", tmp_path / "eval", [f"ckpt_path={two_epoch_run['checkpoints']['best']}"]
    )
    summary = evaluate(cfg)
    assert summary["split"] == "test"
    assert summary["test"]["auc"] == pytest.approx(two_epoch_run["test"]["auc"], abs=1e-6)


@pytest.mark.parametrize(
    ("name", "optimizer_class", "hyperparameter"),
    [
        ("sgd", torch.optim.SGD, ("momentum", 0.9)),
        ("adam", torch.optim.Adam, ("weight_decay", 0.0)),
        ("adamw", torch.optim.AdamW, ("weight_decay", 0.01)),
    ],
)
def test_each_optimizer_trains_and_is_the_one_checkpointed(
    train_config, name, optimizer_class, hyperparameter
) -> None:
    summary = train(train_config(f"optimizer={name}", "test=false"))
    checkpoint = torch.load(summary["checkpoints"]["last"], weights_only=True)
    model, _ = load_trained(summary["checkpoints"]["last"])
    optimizer = model.configure_optimizers()["optimizer"]
    assert type(optimizer) is optimizer_class
    optimizer.load_state_dict(checkpoint["optimizer_states"][0])  # the saved state fits it
    key, value = hyperparameter
    assert checkpoint["optimizer_states"][0]["param_groups"][0][key] == value
    assert np.isfinite(summary["final"]["train/loss"])


@pytest.mark.slow
def test_bf16_autocast_and_a_compiled_network_train_and_reload(train_config) -> None:
    cfg = train_config("trainer.precision=bf16-mixed", "compile=true", "test=false")
    assert build_module(cfg, ["a", "b"]).net._compiled_call_impl is not None  # torch.compile'd
    summary = train(cfg)
    assert np.isfinite(summary["final"]["train/loss"]) and summary["final"]["val/auc"] > 0.5
    checkpoint = torch.load(summary["checkpoints"]["last"], weights_only=True)
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])  # plain keys
    model, _ = load_trained(summary["checkpoints"]["last"])  # into an uncompiled network
    torch.testing.assert_close(model.state_dict(), checkpoint["state_dict"])


@pytest.mark.slow
def test_mean_probs_and_a_scheduler_train(train_config) -> None:
    summary = train(
        train_config("model.aggregation=mean_probs", "scheduler=cosine", "trainer.max_epochs=2")
    )
    assert summary["config"]["model"]["aggregation"] == "mean_probs"
    assert summary["final"]["lr-SGD"] < 0.1135  # the cosine schedule lowered it


def test_tags_without_positives_are_skipped_with_a_warning(train_config, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="tagger.module"):
        summary = train(train_config("data.val_clips=3", "test=false"))
    skipped = summary["val"]["skipped_tags"]
    assert skipped, "3 clips cannot have every tag both present and absent"
    assert any(", ".join(skipped) in record.message for record in caplog.records)
    assert np.isfinite(summary["final"]["val/auc"])
    assert summary["val"]["per_tag_auc"][skipped[0]] is None or np.isnan(
        summary["val"]["per_tag_auc"][skipped[0]]
    )


def test_max_epochs_null_means_no_epoch_limit(train_config) -> None:
    """Lightning's own null would mean 1000 epochs; tagger's null is no limit (-1)."""
    RecordEpochLimit.seen = []
    probe = f"+callbacks.probe._target_={__name__}.RecordEpochLimit"
    summary = train(train_config("trainer.max_epochs=null", "trainer.max_steps=8", probe))
    assert RecordEpochLimit.seen == [-1]
    assert summary["global_step"] == 8  # max_steps ended it, in its second epoch
