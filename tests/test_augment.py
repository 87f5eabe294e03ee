"""augment=: training batches are augmented on the device, repeatably; nothing else is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning import Callback, LightningModule, Trainer
from omegaconf import OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader

from tagger.augment import DEFAULTS, Augment, augment_callbacks
from tagger.errors import ConfigError, find_config_error
from tagger.metrics import EpochTagScores
from tagger.module import TaggingModule
from tagger.train import train
from tests.conftest import REPO_ROOT, TINY, compose_config, run_cli

SR = 12000
EVERY = {name: {"p": 1.0} for name in DEFAULTS}  # every transform on every clip


def standard(tmp_path: Path, *overrides: str) -> Augment:
    """The Augment of conf/augment/standard.yaml as a run composes it."""
    cfg = compose_config("train", tmp_path, ["augment=standard", *overrides])
    return instantiate(cfg.augment, _convert_="all")


def int16_batch(n_clips: int = 6, windows: int = 2, length: int = 2048, seed: int = 0) -> dict:
    """A batch as the data module gives it: int16 audio [B, n, 1, T], 0/1 labels [B, 5]."""
    g = torch.Generator().manual_seed(seed)
    audio = torch.randint(-8000, 8000, (n_clips, windows, 1, length), generator=g)
    labels = (torch.rand(n_clips, 5, generator=g) < 0.4).float()
    return {"audio": audio.to(torch.int16), "labels": labels, "index": torch.arange(n_clips)}


def test_none_is_the_default_and_adds_no_callback(tmp_path: Path) -> None:
    cfg = compose_config("train", tmp_path, [])
    assert augment_callbacks(cfg) == []
    assert augment_callbacks(compose_config("train", tmp_path, ["~augment"])) == []
    (callback,) = augment_callbacks(compose_config("train", tmp_path, ["augment=standard"]))
    assert isinstance(callback, Augment) and callback.sample_rate == cfg.data.sample_rate


def test_none_yaml_holds_the_code_defaults_and_standard_switches_every_transform_on(
    tmp_path: Path,
) -> None:
    none = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "conf" / "augment" / "none.yaml"))
    assert {name: none[name] for name in DEFAULTS} == DEFAULTS
    augment = standard(tmp_path)
    for name in DEFAULTS:
        assert 0 < getattr(augment, name)["p"] <= 1, name


def test_same_draw_same_batch_and_draws_differ_by_step_and_rank(tmp_path: Path) -> None:
    augment = standard(tmp_path)
    batch = int16_batch()

    def run(step: int, micro: int = 0, rank: int = 0, out: Tensor | None = None) -> tuple:
        draws = augment.draw(6, augment.rng(step, micro, rank))
        return augment.apply(batch["audio"], batch["labels"], draws, out)

    first, again = run(3), run(3)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    buffer = torch.full(batch["audio"].shape, 7.0)
    in_buffer = run(3, out=buffer)
    assert in_buffer[0] is buffer and torch.equal(buffer, first[0])
    for other in (run(4), run(3, micro=1), run(3, rank=1)):  # step, accumulation, rank
        assert not torch.equal(first[0], other[0])
    assert first[0].dtype == torch.float32 and first[0].shape == batch["audio"].shape
    assert batch["audio"].dtype == torch.int16  # the input is left as it was


def test_every_transform_changes_every_clip_and_keeps_the_scale() -> None:
    augment = Augment(SR, seed=1, **EVERY)
    batch = int16_batch()
    audio, _ = augment.apply(batch["audio"], batch["labels"], augment.draw(6, augment.rng(0)))
    clean = batch["audio"].float()
    assert torch.isfinite(audio).all()
    assert all(not torch.allclose(a, c) for a, c in zip(audio, clean, strict=True))
    ratio = audio.pow(2).mean().sqrt() / clean.pow(2).mean().sqrt()
    assert 0.1 < ratio < 3  # still on the int16 scale the model divides by input_scale


@pytest.mark.parametrize(
    ("name", "method"),
    [("gain", None), ("polarity", None), ("filter", None), ("pitch", "speed"),
     ("pitch", "vocoder"), ("noise", None)],
)  # fmt: skip
def test_each_transform_alone_touches_exactly_its_clips(name: str, method: str | None) -> None:
    settings: dict[str, Any] = {"p": 0.5, **({"method": method} if method else {})}
    augment = Augment(SR, seed=2, **{name: settings})
    batch = int16_batch(n_clips=16)
    draws = augment.draw(16, augment.rng(5))
    scaled = draws.factor != 1
    chosen = {"gain": scaled, "polarity": scaled, "filter": draws.filtered,
              "pitch": draws.shifted, "noise": draws.noisy}[name]  # fmt: skip
    assert 0 < chosen.sum() < 16
    audio, labels = augment.apply(batch["audio"], batch["labels"], draws)
    changed = (audio != batch["audio"].float()).flatten(1).any(dim=1).numpy()
    assert (changed == chosen).all()
    assert torch.equal(labels, batch["labels"])
    if name == "polarity":
        flipped = torch.as_tensor(chosen)
        torch.testing.assert_close(audio[flipped], -batch["audio"][flipped].float())


def test_gain_within_its_range() -> None:
    augment = Augment(SR, seed=3, gain={"p": 1.0, "db": [-6.0, 6.0]})
    batch = int16_batch(n_clips=32)
    audio, _ = augment.apply(batch["audio"], batch["labels"], augment.draw(32, augment.rng(0)))
    ratio = audio.flatten(1).abs().amax(1) / batch["audio"].float().flatten(1).abs().amax(1)
    db = 20 * torch.log10(ratio)
    assert db.min() >= -6.01 and db.max() <= 6.01 and db.max() - db.min() > 6


def test_noise_is_at_each_windows_snr() -> None:
    augment = Augment(SR, seed=5, noise={"p": 1.0, "snr_db": [0.0, 30.0]})
    batch = int16_batch(n_clips=8, windows=3, length=4096)
    draws = augment.draw(8, augment.rng(0))
    audio, _ = augment.apply(batch["audio"], batch["labels"], draws)
    clean = batch["audio"].float()
    noise = audio - clean
    measured = 10 * torch.log10(clean.pow(2).mean(-1) / noise.pow(2).mean(-1))  # [8, 3, 1]
    expected = torch.as_tensor(draws.snr_db, dtype=torch.float32).view(8, 1, 1)
    assert (measured - expected).abs().max() < 0.5
    assert noise.mean().abs() < 0.05 * noise.std()


def test_mixup_mixes_audio_and_labels_with_the_same_weight() -> None:
    augment = Augment(SR, seed=4, mixup={"p": 1.0, "alpha": 0.4})
    batch = int16_batch(n_clips=8)
    draws = augment.draw(8, augment.rng(0))
    assert (draws.lam >= 0.5).all() and (draws.lam <= 1).all()
    audio, labels = augment.apply(batch["audio"], batch["labels"], draws)
    lam = torch.as_tensor(draws.lam, dtype=torch.float32)
    other = torch.as_tensor(draws.partner)
    x, y = batch["audio"].float(), batch["labels"]
    expected = lam.view(-1, 1, 1, 1) * x + (1 - lam).view(-1, 1, 1, 1) * x[other]
    torch.testing.assert_close(audio, expected, rtol=1e-5, atol=1e-2)
    torch.testing.assert_close(labels, lam[:, None] * y + (1 - lam[:, None]) * y[other])
    # the train AUC scores the mixed labels rounded: the dominant clip's 0/1 tags
    scores = EpochTagScores(5)
    scores.update(torch.rand(8, 5), labels)
    assert torch.equal(scores.targets[0], y.to(torch.int8))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment.gain.p=1.5", "augment.gain.p must be a number from 0 to 1 (a probability)"),
        ("augment.noise.p=nan", "augment.noise.p must be a number from 0 to 1 (a probability)"),
        ("augment.pitch.semitones=[1,100]", "augment.pitch.semitones.1 must be a number from -12"),
        ("augment.gain.db=[-6,abc]", "augment.gain.db.1 must be a number (dB), not 'abc'"),
        ("augment.noise.snr_db=[40,10]", "augment.noise.snr_db must be finite with low <= high"),
        ("augment.filter.lowpass_hz=[2000,7000]", "cutoffs must stay below 6000 Hz"),
        ("augment.filter.kinds=[notch]", "augment.filter.kinds must be some of"),
        ("augment.mixup.alpha=0", "augment.mixup.alpha must be a positive number, not 0"),
        ("augment.pitch.semitones=[]", "augment.pitch.semitones must be a non-empty list"),
        ("augment.pitch.method=tape", "augment.pitch.method must be one of speed, vocoder"),
        ("+augment.gain.typo=1", "augment.gain has no setting typo"),
    ],
)
def test_bad_settings_are_refused_in_one_line(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(Exception) as error:
        standard(tmp_path, override)
    found = find_config_error(error.value)
    assert isinstance(found, ConfigError) and message in str(found) and "\n" not in str(found)


class Recorder(LightningModule):
    """Records the audio and labels each step gets; a one-weight model so it trains."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[str, list[tuple[Tensor, Tensor]]] = {}

    def _record(self, stage: str, batch: dict[str, Tensor]) -> Tensor:
        self.seen.setdefault(stage, []).append((batch["audio"].clone(), batch["labels"].clone()))
        return (self.weight * batch["audio"].float().mean()) ** 2

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._record("train", batch)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._record("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._record("test", batch)

    def predict_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._record("predict", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def loader() -> DataLoader:
    batches = [int16_batch(seed=i) for i in range(3)]
    return DataLoader(batches, batch_size=None)


def fit_and_record(augment: Augment | None) -> Recorder:
    module = Recorder()
    trainer = Trainer(
        max_epochs=2, callbacks=[augment] if augment else [], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader(), val_dataloaders=loader())
    trainer.test(module, loader(), verbose=False)
    trainer.predict(module, loader())
    return module


def test_only_training_steps_get_augmented_batches_and_the_same_seed_repeats_them() -> None:
    clean = fit_and_record(None).seen
    augmented = fit_and_record(Augment(SR, seed=7, **EVERY)).seen
    again = fit_and_record(Augment(SR, seed=7, **EVERY)).seen
    other_seed = fit_and_record(Augment(SR, seed=8, **EVERY)).seen
    assert len(augmented["train"]) == 6  # 2 epochs of 3 batches
    for (audio, labels), (clean_audio, _) in zip(augmented["train"], clean["train"], strict=True):
        assert audio.dtype == torch.float32 and clean_audio.dtype == torch.int16
        assert not torch.allclose(audio, clean_audio.float())
        assert not torch.equal(labels.round(), labels)  # mixed labels reached training_step
    # each step draws anew: the same clips in epoch 2 are augmented differently
    assert not torch.equal(augmented["train"][0][0], augmented["train"][3][0])
    for stage in ("val", "test", "predict"):
        assert len(augmented[stage]) == len(clean[stage]) > 0
        for (audio, labels), (clean_audio, clean_labels) in zip(
            augmented[stage], clean[stage], strict=True
        ):
            assert audio.dtype == torch.int16
            assert torch.equal(audio, clean_audio) and torch.equal(labels, clean_labels)
    for (a, la), (b, lb) in zip(augmented["train"], again["train"], strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(augmented["train"][0][0], other_seed["train"][0][0])


class TrainBatches:
    """Patches ``TaggingModule.training_step`` to keep the audio and labels it gets."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[Tensor, Tensor]] = []
        real = TaggingModule.training_step

        def spy(module: TaggingModule, batch: dict, batch_idx: int) -> Any:
            self.seen.append((batch["audio"].detach().clone(), batch["labels"].clone()))
            return real(module, batch, batch_idx)

        monkeypatch.setattr(TaggingModule, "training_step", spy)


@pytest.mark.slow
def test_train_with_the_standard_preset_records_it(train_config, monkeypatch) -> None:
    batches = TrainBatches(monkeypatch)
    summary = train(train_config("augment=standard"))
    assert summary["status"] == "completed" and 0 <= summary["final"]["train/auc"] <= 1
    recorded = json.loads((Path(summary["run_dir"]) / "metrics.json").read_text())
    assert recorded["config"]["augment"]["_target_"] == "tagger.augment.Augment"
    assert recorded["config"]["augment"]["pitch"]["p"] == 0.1
    assert recorded["config"]["augment"]["sample_rate"] == 12000
    assert all(audio.dtype == torch.float32 for audio, _ in batches.seen)
    assert any(not torch.equal(labels.round(), labels) for _, labels in batches.seen)


@pytest.mark.slow
def test_none_trains_exactly_as_before(train_config) -> None:
    """augment=none adds nothing: the same metrics as a run whose config has no augment."""
    plain = train(train_config("~augment", "test=false", run="plain"))
    none = train(train_config("augment=none", "test=false", run="none"))
    drop = {"train/step_time"}
    assert {k: v for k, v in none["final"].items() if k not in drop} == {
        k: v for k, v in plain["final"].items() if k not in drop
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "precision", ["32-true", "bf16-mixed"], ids=["float32", "bf16-mixed"]
)
def test_on_device_int16_batches_are_augmented_as_float(
    train_config, monkeypatch, precision: str
) -> None:
    batches = TrainBatches(monkeypatch)
    summary = train(train_config("augment=standard", "data.on_device=true", "test=false",
                                 f"trainer.precision={precision}"))  # fmt: skip
    assert summary["status"] == "completed" and np.isfinite(summary["final"]["train/loss"])
    assert batches.seen and all(audio.dtype == torch.float32 for audio, _ in batches.seen)
    # the float audio is on the int16 scale, as the on-device int16 batches were
    peak = max(float(audio.abs().max()) for audio, _ in batches.seen)
    assert 1000 < peak < 200_000


@pytest.mark.slow
def test_bench_framework_loop_augments_as_train_does(tmp_path: Path, monkeypatch) -> None:
    """``tagger bench ... augment=standard``: way (b) runs the Augment callback too."""
    from tagger.bench import bench_framework, write_clips
    from tagger.cli.bench import bench_config

    calls: list[torch.dtype] = []
    real = Augment.on_train_batch_start

    def counted(self: Augment, trainer: Trainer, module: LightningModule, batch: dict,
                batch_idx: int) -> None:  # fmt: skip
        real(self, trainer, module, batch, batch_idx)
        calls.append(batch["audio"].dtype)

    monkeypatch.setattr(Augment, "on_train_batch_start", counted)
    store = write_clips(tmp_path / "clips", 24)
    cfg = bench_config(store, tmp_path / "run", ["augment=standard", "data.n_subclips=10",
                                                 "data.batch_size=2"])  # fmt: skip
    result = bench_framework(cfg, torch.device("cpu"), warmup=1, steps=2)
    assert result.clips_per_s > 0
    assert len(calls) >= 3 and set(calls) == {torch.float32}


class SeenByRank(Callback):
    """Appends, per training step, the rank, the audio dtype and whether the labels are
    soft (mixed) to ``out/rank<R>.jsonl``; at the step's end, so after ``Augment``."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, outputs: Any,
                           batch: dict, batch_idx: int) -> None:  # fmt: skip
        labels = batch["labels"]
        augments = [type(c).__name__ for c in trainer.callbacks if isinstance(c, Augment)]
        line = {"dtype": str(batch["audio"].dtype), "augment": augments,
                "soft": bool((labels != labels.round()).any())}  # fmt: skip
        with open(self.out / f"rank{trainer.global_rank}.jsonl", "a") as file:
            file.write(json.dumps(line) + "\n")


@pytest.mark.slow
def test_two_process_ddp_trains_with_the_standard_preset(tmp_path: Path) -> None:
    result = run_cli(str(REPO_ROOT / "train.py"), *TINY, "trainer=ddp", "trainer.accelerator=cpu",
                     "trainer.devices=2", "test=false", "augment=standard",
                     f"+callbacks.seen._target_={__name__}.SeenByRank",
                     f"+callbacks.seen.out={tmp_path}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        lines = (tmp_path / f"rank{rank}.jsonl").read_text().splitlines()
        steps = [json.loads(line) for line in lines]
        assert len(steps) == 3  # 60 clips, batches of 10, half of them each
        assert all(s["dtype"] == "torch.float32" and s["augment"] == ["Augment"] for s in steps)
        assert any(s["soft"] for s in steps)
