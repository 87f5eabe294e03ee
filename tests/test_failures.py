"""Failed runs: recorded with their reason, sweeps go on, a NaN loss keeps the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tagger.cli.train import hydra_main
from tagger.module import TaggingModule, load_trained
from tests.conftest import run_tagger
from tests.test_cli import SMALL


@pytest.mark.slow
def test_a_failing_sweep_job_is_recorded_and_the_others_run(tmp_path: Path) -> None:
    result = run_tagger("train", "-m", "length=1024", "stride=2048,256", "test=false", *SMALL,
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    failed, done = (json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json")))
    assert failed["status"] == "failed"
    assert "stride 2048 must be between 1 and its length 1024" in failed["error"]
    assert failed["config"]["conv"] == {"length": 1024, "stride": 2048}
    assert done["status"] == "completed" and done["config"]["conv"]["stride"] == 256
    assert "job 0 failed, the sweep goes on" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("overrides", "last_step"),
    [
        pytest.param([], 6, id="every_step"),  # looked for every step on CPU
        # noted at step 7, found at step 10
        pytest.param(["+model.finite_check_every=5"], 6, id="every_5_steps",
                     marks=pytest.mark.slow),
        # found as the step checkpoint after step 7 is about to be saved: never saved
        pytest.param(["+model.finite_check_every=50",
                      "callbacks.step_checkpoint.every_n_train_steps=1"], 7,
                     id="before_a_checkpoint", marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_nan_loss_stops_the_run_naming_the_step_and_keeps_the_checkpoint(
    train_config, monkeypatch, capsys, overrides, last_step
) -> None:
    real_forward = TaggingModule.forward

    def forward_that_diverges_at_step_7(self, audio):
        logits = real_forward(self, audio)
        return logits * float("nan") if self.training and self.global_step == 7 else logits

    monkeypatch.setattr(TaggingModule, "forward", forward_that_diverges_at_step_7)
    cfg = train_config("trainer.max_epochs=3", *overrides)  # 6 steps per epoch
    with pytest.raises(SystemExit) as exit_info:
        hydra_main(cfg)
    assert exit_info.value.code == 1

    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("tagger: error:")]
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert line == (
        "tagger: error: train loss is nan at step 7 (epoch 1); training stopped; "
        f"last good checkpoint: {last}"
    )
    recorded = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert recorded["status"] == "failed" and "step 7" in recorded["error"]

    model, _ = load_trained(last)
    assert torch.load(last, weights_only=True)["global_step"] == last_step
    assert all(torch.isfinite(p).all() for p in model.parameters())
