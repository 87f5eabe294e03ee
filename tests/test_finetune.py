"""Fine-tuning (issue #21): ``train.py init_from=CKPT`` starts a new run from a trained
checkpoint's weights, and ``model.freeze`` leaves a part of the network as it is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from tagger.cli.prepare import prepare
from tagger.data.synthetic import SYNTHETIC_TAGS, synthesize_clip
from tagger.errors import ConfigError
from tagger.models.parts import frozen_modules, output_layer_name
from tagger.module import TaggingModule, build_module, init_from_checkpoint, read_trained
from tagger.train import train
from tests.conftest import TINY, compose_config, run_tagger

#: TINY's run settings without its synthetic data's (for a clip store)
RUN = [o for o in TINY if not o.startswith("data.")]
#: the folder's tags: four of the synthetic clips' tags, under other names
RENAMED = {"bass": "low", "chord": "harmony", "beat": "drums", "fast": "uptempo"}


def net_state(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's network weights, named as in the network."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


def write_tagged_folder(root: Path, counts: dict[str, int], seed: int = 7) -> Path:
    """A folder of .wav files made from synthetic clips (12 kHz, 0.7 s) with their tags
    renamed (``RENAMED``) and a labels CSV with a split column; returns the CSV."""
    rows = ["path,tags,split"]
    for split_index, (split, n_clips) in enumerate(counts.items()):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n_clips):
            audio, labels = synthesize_clip(np.random.default_rng([seed, split_index, i]),
                                            8400, 12000)  # fmt: skip
            tags = [RENAMED[t] for t, on in zip(SYNTHETIC_TAGS, labels, strict=True)
                    if on and t in RENAMED]  # fmt: skip
            soundfile.write(root / split / f"{i:03d}.wav", audio, 12000, subtype="PCM_16")
            rows.append(f"{split}/{i:03d}.wav,{';'.join(tags)},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def tagged_store(tmp_path: Path, counts: dict[str, int]) -> Path:
    labels = write_tagged_folder(tmp_path / "audio", counts)
    prepare(["folder", "--root", str(tmp_path / "audio"), "--labels", str(labels),
             "--out", str(tmp_path / "store"), "--sample-rate", "12000",
             "--clip-seconds", "0.7", "--workers", "1"])  # fmt: skip
    return tmp_path / "store"


# -- bad values: one line, exit 2 -------------------------------------------------------


NOT_A_CHECKPOINT = "notes.ckpt"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["init_from=missing.ckpt"], "init_from=missing.ckpt: no such file"),
        ([f"init_from={NOT_A_CHECKPOINT}"], "init_from: checkpoint notes.ckpt cannot be read"),
        (["init_from=CKPT", "ckpt_path=CKPT"], "init_from and ckpt_path cannot be given together"),
        (["init_from=CKPT", "model=spectrogram"],
         "its network is tagger.models.dieleman.DielemanCNN, this run's "
         "tagger.models.spectrogram.SpectrogramCNN"),
        (["init_from=CKPT", "model.net.filters=[8,8,8]", "model.net.dense_units=7"],
         "none of its network's weights fit this model's"),
        (["model.freeze=head"], "model.freeze must be one of none, front_end, all_but_output"),
    ],
)  # fmt: skip
def test_bad_init_from_is_one_line(
    tmp_path: Path, tiny_checkpoint: Path, overrides: list[str], message: str
) -> None:
    (tmp_path / NOT_A_CHECKPOINT).write_text("hello")
    overrides = [o.replace("CKPT", str(tiny_checkpoint)) for o in overrides]
    result = run_tagger("train", *TINY, *overrides, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("tagger: error: ") and message in line, line
    assert not list(tmp_path.glob("outputs/train/runs/*/checkpoints/*.ckpt"))


# -- what is loaded ---------------------------------------------------------------------


def _module(tag_names: list[str], hparams: dict, freeze: str = "none") -> TaggingModule:
    return TaggingModule(**{**hparams, "tag_names": tag_names}, freeze=freeze)


def test_same_tags_load_everything_and_reordered_tags_reorder_the_head(
    tiny_checkpoint: Path,
) -> None:
    _, hparams, _ = read_trained(tiny_checkpoint)
    stored = net_state(tiny_checkpoint)
    tags = list(hparams["tag_names"])

    model = _module(tags, hparams)
    report = init_from_checkpoint(model, tiny_checkpoint)
    assert report["tags"] == "same" and not report["not_loaded"] and not report["unused"]
    assert all(torch.equal(v, stored[k]) for k, v in model.net.state_dict().items())

    backwards = _module(tags[::-1], hparams)
    report = init_from_checkpoint(backwards, tiny_checkpoint)
    assert report["tags"] == "reordered" and not report["not_loaded"]
    head = output_layer_name(backwards.net)
    state = backwards.net.state_dict()
    assert torch.equal(state[f"{head}.weight"], stored[f"{head}.weight"].flip(0))
    assert torch.equal(state[f"{head}.bias"], stored[f"{head}.bias"].flip(0))

    other = _module(["a", "b", "c"], hparams)
    fresh = {k: v.clone() for k, v in other.net.state_dict().items()}
    report = init_from_checkpoint(other, tiny_checkpoint)
    assert report["tags"] == "different"
    assert set(report["not_loaded"]) == {f"{head}.weight", f"{head}.bias"}
    assert "the tag set differs (the checkpoint has 11 tags, this data 3" in (
        report["not_loaded"][f"{head}.weight"]
    )
    for name, value in other.net.state_dict().items():
        assert torch.equal(value, fresh[name] if name.startswith(head) else stored[name]), name


@pytest.mark.parametrize("model", ["baseline", "wide", "hybrid", "spectrogram",
                                   pytest.param("samplecnn", marks=pytest.mark.slow),
                                   pytest.param("rese2", marks=pytest.mark.slow)])  # fmt: skip
def test_every_network_names_its_front_end_and_output_layer(tmp_path: Path, model: str) -> None:
    cfg = compose_config("train", tmp_path, [f"model={model}"])
    for part in ("front_end", "all_but_output"):
        cfg.model.freeze = part
        module = build_module(cfg, ["a", "b"])
        frozen = {name for name, p in module.net.named_parameters() if not p.requires_grad}
        trainable = {name for name, p in module.net.named_parameters() if p.requires_grad}
        head = output_layer_name(module.net)
        if part == "all_but_output":
            assert trainable == {f"{head}.weight", f"{head}.bias"}
        else:
            assert frozen and trainable and not any(n.startswith(f"{head}.") for n in frozen)
            assert not any(n.startswith("classifier.") for n in frozen)
        module.train()
        for _, sub in frozen_modules(module.net, part):
            assert not any(m.training for m in sub.modules())  # batch norm: eval mode
        assert module.net.classifier[-1].training
        optimizer = module.configure_optimizers()["optimizer"]
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert optimized == {id(p) for p in module.parameters() if p.requires_grad}


def test_freeze_front_end_needs_a_network_that_names_it() -> None:
    class Plain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = torch.nn.Sequential(torch.nn.Linear(3, 2))

    with pytest.raises(ConfigError, match="does not name its front end"):
        frozen_modules(Plain(), "front_end")
    assert [name for name, _ in frozen_modules(Plain(), "all_but_output")] == []


# -- real runs --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("part", "frozen"), [("all_but_output", ("features.", "classifier.0",
                                                                  "classifier.1", "classifier.2")),
                                              ("front_end", ("features.0.", "features.1."))])
def test_a_frozen_part_does_not_change_in_training(
    tmp_path: Path, tiny_checkpoint: Path, part: str, frozen: tuple[str, ...]
) -> None:
    start = tmp_path / "start.ckpt"
    shutil.copy(tiny_checkpoint, start)
    summary = train(compose_config("train", tmp_path / "run", [
        *TINY, "test=false", "trainer.max_epochs=2", f"init_from={start}", f"model.freeze={part}",
    ]))  # fmt: skip
    before, after = net_state(start), net_state(Path(summary["checkpoints"]["last"]))
    assert summary["global_step"] > 0 and summary["init_from"]["tags"] == "same"
    assert summary["config"]["model"]["freeze"] == part
    for name, value in after.items():  # parameters and batch norm's statistics
        if name.startswith(frozen):
            assert torch.equal(value, before[name]), f"{name} changed"
        elif name.endswith(("weight", "bias")):
            assert not torch.equal(value, before[name]), f"{name} did not train"


@pytest.mark.slow
def test_fine_tuning_loads_the_body_and_beats_training_from_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pretrain on the synthetic clips (11 tags)
    pretrained = train(compose_config("train", tmp_path / "pre", [
        *TINY, "data.train_clips=300", "trainer.max_epochs=6", "optimizer=adam",
        "optimizer.lr=0.004", "test=false",
    ]))  # fmt: skip
    checkpoint = Path(pretrained["checkpoints"]["last"])
    # a small folder of other clips with 4 tags of other names
    store = tagged_store(tmp_path, {"train": 40, "val": 40, "test": 80})

    at_start: dict[str, dict[str, torch.Tensor]] = {}
    import tagger.train as train_module

    start_from = train_module.start_from

    def recording(cfg, model, datamodule):
        found = start_from(cfg, model, datamodule)
        at_start[cfg.paths.output_dir] = {k: v.clone() for k, v in model.net.state_dict().items()}
        return found

    monkeypatch.setattr(train_module, "start_from", recording)
    small = [*RUN, "data=store", f"data.path={store}", "data.subclip_len=4096",
             "data.n_subclips=2", "data.batch_size=8", "trainer.max_epochs=6", "optimizer=adam",
             "optimizer.lr=0.004"]
    tuned = train(compose_config("train", tmp_path / "tuned", [*small, f"init_from={checkpoint}"]))
    scratch = train(compose_config("train", tmp_path / "scratch", small))

    stored = net_state(checkpoint)
    tuned_start = at_start[str(tmp_path / "tuned")]
    scratch_start = at_start[str(tmp_path / "scratch")]
    record = tuned["init_from"]
    assert record["checkpoint"] == str(checkpoint) and record["tags"] == "different"
    assert set(record["not_loaded"]) == {"classifier.4.weight", "classifier.4.bias"}
    assert set(record["loaded"]) == set(stored) - set(record["not_loaded"])
    for name, value in tuned_start.items():
        if name.startswith("classifier.4."):  # re-initialised: as the run from scratch
            assert torch.equal(value, scratch_start[name]), name
        else:  # the body: the checkpoint's weights at step 0
            assert torch.equal(value, stored[name]), name
    written = json.loads((tmp_path / "tuned" / "metrics.json").read_text())
    assert written["init_from"]["not_loaded"] == record["not_loaded"]
    assert "init_from" not in scratch
    assert tuned["test"]["auc"] > scratch["test"]["auc"] + 0.05, (tuned["test"], scratch["test"])


def test_a_restarted_fine_tuning_resumes_its_own_checkpoint(tmp_path: Path) -> None:
    """With ckpt_path=auto and a checkpoint found, the run's weights come from it."""
    from tagger.train import check_init_from, start_from

    cfg = compose_config("train", tmp_path, [*TINY, "init_from=pre.ckpt", "ckpt_path=auto"])
    check_init_from(cfg)  # auto is no conflict
    cfg.ckpt_path = str(tmp_path / "checkpoints" / "last.ckpt")  # as resolve_checkpoint finds it
    record = start_from(cfg, None, None)
    assert record == {"checkpoint": "pre.ckpt", "resumed_from": cfg.ckpt_path}
