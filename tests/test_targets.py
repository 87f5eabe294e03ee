"""Nothing read from a checkpoint chooses the code that runs (``tagger.targets``).

A real checkpoint gets a ``_target_`` planted at every node of its stored configs in turn
(hyperparameters and run config), and every command that takes a checkpoint is run on each:
each is refused in one line and the planted code never runs.
"""

from __future__ import annotations

import copy
import json
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from tagger.errors import ConfigError
from tagger.module import load_trained
from tagger.targets import (
    DATA_MODULES,
    NETWORKS,
    OPTIMIZERS,
    RECORDED,
    SCHEDULERS,
    UnsafeConfigError,
    check_stored_config,
)
from tagger.train import train
from tests.conftest import REPO_ROOT, TINY, compose_config, run_cli, run_tagger

MARKER_FN = f"{__name__}.write_marker"


def write_marker(*args: Any, path: str = "", **kwargs: Any) -> None:
    """The planted code: leaves a file where it ran (also through ``_args_``)."""
    Path(path or args[0]).write_text("ran")


class TinyNet(nn.Sequential):
    """A user's own network (as in docs/install.md): raw audio [N, 1, T] -> logits [N, K]."""

    def __init__(self, num_tags: int, filters: int = 4) -> None:
        super().__init__(OrderedDict(
            conv=nn.Conv1d(1, filters, kernel_size=256, stride=256), relu=nn.ReLU(),
            pool=nn.AdaptiveMaxPool1d(1), flatten=nn.Flatten(),
            classifier=nn.Sequential(nn.Linear(filters, num_tags)),  # as tagger's networks
        ))  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Path:
    """The last.ckpt of a real one-epoch run."""
    return tiny_checkpoint


def places(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every place in a tree of dicts and lists, as a tuple of keys, the root excluded."""
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        yield (*path, key)
        yield from places(value, (*path, key))


def payloads(marker: Path) -> list[dict[str, Any]]:
    """Code to plant: a function of the tests, a tagger function that writes a file, a
    standard-library one, and ``_args_``."""
    return [
        {"_target_": MARKER_FN, "path": str(marker)},
        {"_target_": "tagger.run_files.write_text", "path": str(marker), "text": "ran"},
        {"_target_": "pathlib.Path.touch", "self": str(marker)},
        {"_target_": MARKER_FN, "_args_": [str(marker)]},
    ]


def plant(tree: dict, place: tuple, payload: dict[str, Any]) -> dict:
    """A copy of ``tree`` with ``payload`` at ``place``: merged into a dict node (its own
    ``_target_`` replaced), or replacing a leaf."""
    tree = copy.deepcopy(tree)
    parent = tree
    for key in place[:-1]:
        parent = parent[key]
    here = parent[place[-1]]
    if isinstance(here, dict):
        here.update(payload)
    else:
        parent[place[-1]] = dict(payload)
    return tree


def attacks(checkpoint: Path, marker: Path) -> Iterator[tuple[str, dict]]:
    """(where, planted checkpoint contents) for every node of the stored configs."""
    contents = torch.load(checkpoint, weights_only=True)
    for section in ("hyper_parameters", "config"):
        for place in places(contents[section]):
            for i, payload in enumerate(payloads(marker)):
                planted = dict(contents)
                planted[section] = plant(contents[section], place, payload)
                yield f"{section}.{'.'.join(map(str, place))} #{i}", planted


def in_process(main: Callable[[], None], argv: list[str], capsys: pytest.CaptureFixture) -> tuple:
    """(exit status, stderr) of a command's ``main()`` run with ``argv``."""
    old = sys.argv
    sys.argv = argv
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


def commands(ckpt: Path, tmp_path: Path) -> dict[str, tuple[Callable[[], None], list[str]]]:
    """Every command that builds something from a checkpoint: (main, argv)."""
    from tagger.cli import embed, evaluate, export, predict, robustness, train

    song = tmp_path / "song.wav"
    if not song.exists():
        sf.write(song, np.zeros(12000, dtype=np.float32), 12000)
    return {
        "eval": (evaluate.main, ["eval.py", f"ckpt_path={ckpt}",
                                 f"hydra.run.dir={tmp_path / 'eval'}"]),
        "predict": (predict.main, ["tagger predict", str(ckpt), str(song)]),
        "export": (export.main, ["tagger export", str(ckpt), "--format", "torchscript",
                                 "--out", str(tmp_path / "m.pt")]),
        "robustness": (robustness.main, ["tagger robustness", str(ckpt), "--families", "gain",
                                         "--gains", "0", "--out", str(tmp_path / "rob")]),
        "export bundle": (export.main, ["tagger export", str(ckpt), "--format", "bundle",
                                        "--out", str(tmp_path / "bundle")]),
        "embed": (embed.main, ["tagger embed", str(ckpt), str(song),
                               "--out", str(tmp_path / "emb")]),
        "fine-tune": (train.main, ["train.py", f"init_from={ckpt}", "trainer.max_epochs=1",
                                   f"hydra.run.dir={tmp_path / 'finetune'}"]),
    }  # fmt: skip


def test_every_target_of_tagger_configs_is_allowed_where_it_stands() -> None:
    """The allowlist holds every class that conf/ names, so no run of tagger's own is refused."""
    import yaml

    named = set()
    for path in (REPO_ROOT / "conf").rglob("*.yaml"):
        text = yaml.safe_load(path.read_text())
        for place in places(text) if isinstance(text, (dict, list)) else ():
            node = text
            for key in place:
                node = node[key]
            if place[-1] == "_target_" and place[0] != "hydra":
                named.add(node)
    # The hydra node's (a sweeper's sampler, a study's callback) are never stored: Hydra
    # hands a run its config without it.
    allowed = RECORDED | NETWORKS | DATA_MODULES | OPTIMIZERS | SCHEDULERS
    assert named - allowed == set()
    for model in (REPO_ROOT / "conf" / "model").glob("*.yaml"):
        net = yaml.safe_load(model.read_text()).get("net", {}).get("_target_")
        assert net is None or net in NETWORKS, model


def test_a_real_checkpoint_passes_the_gate(checkpoint: Path) -> None:
    model, config = load_trained(checkpoint)
    assert type(model.net).__name__ == "DielemanCNN"
    check_stored_config(config, "ckpt")


@pytest.mark.slow  # over 200 plantings, each saved and loaded
def test_planted_code_at_every_node_is_refused_before_anything_is_built(
    checkpoint: Path, tmp_path: Path
) -> None:
    """The gate itself: every planting of every payload is refused by ``load_trained`` with
    one line, and no payload ever runs."""
    marker = tmp_path / "marker"
    planted_file = tmp_path / "planted.ckpt"
    count = 0
    for where, planted in attacks(checkpoint, marker):
        torch.save(planted, planted_file)
        with pytest.raises(ConfigError) as refused:
            load_trained(planted_file)
        assert "\n" not in str(refused.value), where
        assert str(planted_file) in str(refused.value), where
        assert not marker.exists(), where
        count += 1
    assert count > 200  # every node of both stored configs, four payloads each


#: Commands that reach the checkpoint through the same ``load_trained``/``read_trained`` as
#: predict and eval (tried on every node by the test above): tried on every fifth node (the
#: payloads still in turn), to keep the suite's time.
LATER_COMMANDS = ("export bundle", "embed", "fine-tune")


@pytest.mark.slow
def test_every_command_refuses_planted_code_in_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """eval.py, tagger predict, export (a model and a bundle), embed, robustness and a
    fine-tuning (train.py init_from=) on every planting: exit 2, one line, no traceback,
    no marker."""
    marker = tmp_path / "marker"
    planted_file = tmp_path / "planted.ckpt"
    kinds = len(payloads(marker))
    for n, (where, planted) in enumerate(attacks(checkpoint, marker)):
        node, payload = divmod(n, kinds)
        if payload != node % kinds:  # every node once, the payloads taken in turn
            continue
        torch.save(planted, planted_file)
        for name, (main, argv) in commands(planted_file, tmp_path).items():
            if name in LATER_COMMANDS and node % 5:  # the same gate: a fifth of the nodes
                continue
            code, err = in_process(main, argv, capsys)
            assert code == 2, (name, where, err[-500:])
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "error: " in lines[0], (name, where, err[-500:])
            assert not marker.exists(), (name, where)


@pytest.mark.slow
def test_eval_py_subprocess_refuses_a_planted_data_target(checkpoint: Path, tmp_path: Path) -> None:
    """The command a user runs, end to end: one line, exit 2, no marker."""
    marker = tmp_path / "marker"
    contents = torch.load(checkpoint, weights_only=True)
    planted = tmp_path / "shared.ckpt"
    contents["config"]["data"]["_target_"] = MARKER_FN
    contents["config"]["data"]["path"] = str(marker)
    torch.save(contents, planted)
    result = run_cli(str(REPO_ROOT / "eval.py"), f"ckpt_path={planted}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "config.data names" in line and MARKER_FN in line and "trusted_modules" in line
    assert not marker.exists()


@pytest.mark.slow  # trains its own network, then runs four commands twice
def test_a_users_own_network_needs_its_module_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A checkpoint of a network of the user's own is refused until its module is named on
    the command line; then every command builds it."""
    own_net = ["~model.net", f"+model.net={{_target_:{__name__}.TinyNet}}"]
    summary = train(compose_config("train", tmp_path / "run", [*TINY, "test=false", *own_net]))
    ckpt = Path(summary["checkpoints"]["last"])
    with pytest.raises(UnsafeConfigError, match=r"TinyNet.*--trust-module"):
        load_trained(ckpt)
    model, _ = load_trained(ckpt, trusted_modules=[__name__])
    assert isinstance(model.net, TinyNet)
    module = __name__.rpartition(".")[0] or __name__
    for name, (main, argv) in commands(ckpt, tmp_path).items():
        if name == "fine-tune":  # a new run of the same network
            argv = [*argv, *TINY, *own_net]
        code, err = in_process(main, argv, capsys)
        assert code == 2 and "TinyNet" in err, (name, err[-300:])
        hydra = name in ("eval", "fine-tune")
        trust = [f"trusted_modules=[{module}]"] if hydra else ["--trust-module", module]
        code, err = in_process(main, [*argv, *trust], capsys)
        assert code in (0, None), (name, err[-1000:])


@pytest.mark.parametrize(
    "value", [{"_target_": MARKER_FN, "path": "MARKER"}, "${oc.env:HOME}", "16000", 0, 1.5, True]
)
def test_a_stores_meta_json_supplies_numbers_only(tmp_path: Path, value: Any) -> None:
    """``data=store`` reads the store's sample rate into the config: anything but a positive
    whole number is refused in one line, and a planted node never runs."""
    marker = tmp_path / "marker"
    store = tmp_path / "store"
    store.mkdir()
    value = {**value, "path": str(marker)} if isinstance(value, dict) else value
    (store / "meta.json").write_text(json.dumps({"sample_rate": value, "clip_samples": None}))
    result = run_tagger("train", "data=store", f"data.path={store}", "trainer.max_epochs=1",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "meta.json: sample_rate must be a positive whole number" in line
    assert not marker.exists()
