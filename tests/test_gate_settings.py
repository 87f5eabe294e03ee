"""Gate 3: one schema for every setting and flag.

Every numeric (or true/false) leaf of every option of every config group has a ``Spec``
in ``tagger.settings.SETTINGS``; ``check_settings`` refuses NaN, infinity, a huge number,
text and whatever is outside a setting's range in one line naming it, and accepts 0 or
-1 only where the spec gives them a meaning. Every numeric flag of every ``tagger``
command is typed by ``tagger.cli.args`` from a ``Spec``: generated bad values end in
exit status 2 and one error line, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf
from torch import nn

import tagger.train
from tagger.cli import bench, check, prepare
from tagger.cli.args import spec_of
from tagger.cli.main import COMMANDS
from tagger.cli.main import main as tagger_main
from tagger.errors import ConfigError
from tagger.module import load_trained
from tagger.settings import SETTINGS, Spec, check_last_batch, check_settings, leaves, spec_for
from tagger.train import train
from tests.conftest import REPO_ROOT, TINY, compose_config, run_cli

CONF = REPO_ROOT / "conf"
#: Every option of every config group that train.py composes (experiments included).
GROUPS = ("model", "data", "optimizer", "scheduler", "augment", "trainer", "callbacks",
          "logger", "debug", "experiment", "geometry", "study")  # fmt: skip
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]
#: What every numeric setting is tried with.
BAD = (math.nan, math.inf, -math.inf, 0, -1, 1e30, "text")


def _composed(tmp_path: Path) -> list[tuple[str, DictConfig]]:
    configs = [(f"{group}={name}", compose_config("train", tmp_path / f"{group}-{name}",
                                                  [f"{group}={name}"]))
               for group, name in OPTIONS]  # fmt: skip
    eval_cfg = compose_config("eval", tmp_path / "eval", ["ckpt_path=x.ckpt"])
    return [*configs, ("eval.yaml", eval_cfg)]


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, DictConfig]]:
    return _composed(tmp_path_factory.mktemp("configs"))


def _typed_leaves(cfg: DictConfig) -> dict[str, Any]:
    """The leaves that hold a number or true/false (resolved), keyed by dotted name."""
    found = {}
    for key, node in leaves(cfg):
        if key.split(".")[-1].startswith("_") or node._is_missing():
            continue
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if isinstance(value, (bool, int, float)):
            found[key] = value
    return found


@pytest.mark.slow  # composing every option of every group takes seconds (`composed`)
def test_every_number_and_flag_of_every_config_option_has_a_spec(composed) -> None:
    """(b) a new numeric key cannot be added to conf/ without its range in SETTINGS."""
    assert len(composed) > 40
    missing = {key: where for where, cfg in composed for key in _typed_leaves(cfg)
               if spec_for(key) is None}  # fmt: skip
    assert not missing, f"settings without a Spec in tagger.settings.SETTINGS: {missing}"
    for _, cfg in composed:
        check_settings(cfg)  # every shipped option passes its own schema


def test_every_numeric_spec_is_bounded() -> None:
    for key, spec in SETTINGS.items():
        if spec.numeric:
            assert math.isfinite(spec.low) and math.isfinite(spec.high), key
            assert not spec.accepts(1e30) and not spec.accepts(math.nan), key
    with pytest.raises(ValueError, match="needs a finite low and high"):
        Spec("float", 0.0, math.inf)


def _named_key(error: ConfigError) -> str:
    return str(error).split(" ")[0].rstrip(":")


@pytest.mark.slow
def test_bad_values_of_every_numeric_setting_are_refused_in_one_line(composed) -> None:
    """(a) nan, inf, 0, -1, 1e30 and text on every numeric setting: one line naming it (or
    the setting that takes its value from it), or accepted where the spec says so."""
    tried: set[str] = set()
    accepted: list[str] = []
    for _, cfg in composed:
        numeric = {key for key, _ in leaves(cfg) if (spec := spec_for(key)) and spec[1].numeric}
        for key in sorted(numeric - tried):
            tried.add(key)
            spec = spec_for(key)[1]
            for bad in BAD:
                trial = copy.deepcopy(cfg)
                OmegaConf.update(trial, key, bad, force_add=True)
                try:
                    check_settings(trial)
                except ConfigError as error:
                    named = _named_key(error)
                    derived = dict(leaves(trial))[named]._is_interpolation()
                    assert named == key or derived, f"{key}={bad!r}: names {named}: {error}"
                    assert "\n" not in str(error) and f"not {bad!r}" in str(error)
                    continue
                assert spec.accepts(bad), f"{key}={bad!r} passed, but its spec refuses it"
                assert bad in (0, -1) and not isinstance(bad, float), f"{key}={bad!r} passed"
                accepted.append(f"{key}={bad}")
    assert len(tried) > 80
    # 0 and -1 pass only where they mean something (no loader processes, no limit, off...)
    assert "data.num_workers=0" in accepted and "trainer.max_steps=-1" in accepted
    assert "data.train_clips=0" not in accepted and "data.sample_rate=0" not in accepted


def _outside(spec: Spec) -> st.SearchStrategy[Any]:
    """Values ``spec`` must refuse: beyond its bounds, fractions for whole numbers, text."""
    beyond = st.one_of(st.floats(max_value=spec.low), st.floats(min_value=spec.high),
                       st.sampled_from([math.nan, math.inf, -math.inf]),
                       st.integers(max_value=int(spec.low)), st.integers(min_value=int(spec.high)),
                       st.text(max_size=5), st.booleans())  # fmt: skip
    fractions = st.floats(spec.low, spec.high).filter(lambda x: x != int(x))
    return st.one_of(beyond, *([fractions] if spec.kind == "int" else []))


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_generated_bad_values_of_numeric_settings_are_refused(composed, data) -> None:
    """Any numeric setting of any option, any value outside its spec: refused in one line
    naming it (or the setting that takes its value from it)."""
    where, cfg = composed[data.draw(st.integers(0, len(composed) - 1))]
    keys = sorted(key for key, _ in leaves(cfg) if (spec := spec_for(key)) and spec[1].numeric)
    key = data.draw(st.sampled_from(keys))
    spec = spec_for(key)[1]
    bad = data.draw(_outside(spec))
    assume(not spec.accepts(bad))
    trial = copy.deepcopy(cfg)
    OmegaConf.update(trial, key, bad, force_add=True)
    with pytest.raises(ConfigError) as error:
        check_settings(trial)
    named = _named_key(error.value)
    assert named == key or dict(leaves(trial))[named]._is_interpolation(), (where, key, bad)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.num_workers=-1"], "data.num_workers must be a whole number from 0 to 1024"),
        (["data.train_clips=0"], "data.train_clips must be a positive whole number"),
        (["data.sample_rate=0"], "data.sample_rate must be a whole number from 1000 to 384000"),
        (["optimizer.lr=nan"], "optimizer.lr must be a positive number, not nan"),
        (["augment=standard", "augment.pitch.semitones=[100]"],
         "augment.pitch.semitones.0 must be a number from -12 to 12 (semitones), not 100"),
        (["+trainer.gradient_clip_val=inf"], "trainer.gradient_clip_val must be a number from"),
        (["+my_setting=nan"], "my_setting must be a finite number, not nan"),
        (["seed=null"], "data.shuffle_seed must be a whole number"),
    ],
)  # fmt: skip
def test_the_issues_settings_are_refused(tmp_path: Path, overrides: list[str],
                                         message: str) -> None:  # fmt: skip
    with pytest.raises(ConfigError) as error:
        check_settings(compose_config("train", tmp_path, overrides))
    assert message in str(error.value)


def test_a_store_not_found_is_left_to_the_data_module(tmp_path: Path) -> None:
    """data.sample_rate of data=store comes from the store; with none there (None), the
    data module says which data.path is wrong, not the schema."""
    check_settings(compose_config("train", tmp_path, ["data=store", f"data.path={tmp_path}/x"]))
    with pytest.raises(ConfigError, match=r"data\.sample_rate must be"):
        check_settings(compose_config("train", tmp_path, ["data=store", "data.sample_rate=null"]))


def test_check_settings_on_a_part_of_a_config() -> None:
    check_settings(OmegaConf.create({"pitch": {"p": 0.5}}), prefix="augment.")
    with pytest.raises(ConfigError, match=r"^augment\.pitch\.p must be a number from 0 to 1"):
        check_settings(OmegaConf.create({"pitch": {"p": 2}}), prefix="augment.")
    # plain data (read from a file) is taken as it is: a ${...} there is text, not resolved
    with pytest.raises(ConfigError, match=r"^data\.batch_size must be a whole number .*, not "
                                          r"'\$\{oc\.env:HOME\}'"):
        check_settings({"data": {"batch_size": "${oc.env:HOME}"}})
    with pytest.raises(ConfigError, match=r"^model\.net\.filters\.1 must be"):
        check_settings({"model": {"net": {"filters": [32, 0]}}})


# --- the command line ------------------------------------------------------------------

#: command -> (its parser, the arguments it needs besides the flag tried)
PARSERS: dict[str, tuple[argparse.ArgumentParser, list[str]]] = {
    "prepare mtat": (prepare.parser(), ["mtat", "--root", "r", "--out", "o"]),
    "prepare folder": (prepare.parser(), ["folder", "--root", "r", "--labels", "l", "--out", "o"]),
    "prepare jamendo": (prepare.parser(), ["jamendo", "--audio", "a", "--splits", "s", "--out",
                                           "o"]),
    "predict": (None, ["c.ckpt", "x.wav", "--taggram", "no-such-folder"]),
    "embed": (None, ["c.ckpt", "x.wav", "--out", "o", "--per-window"]),
    "robustness": (None, ["c.ckpt"]),
    "bench": (bench.parser(), []),
    "check": (check.parser(), []),
    "export": (None, []),
    "report": (None, []),
}  # fmt: skip
#: The commands that take Hydra overrides, checked by check_settings (train.py, eval.py,
#: models: tests above), not flags.
HYDRA_COMMANDS = {"train", "eval", "models"}


def _actions(parser: argparse.ArgumentParser, words: list[str]) -> list[argparse.Action]:
    """The parser's options, those of the sub-command named in ``words`` included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = next(name for name in action.choices if name in words)
            found += _actions(action.choices[sub], words)
        elif action.option_strings:
            found.append(action)
    return found


def _flags() -> list[tuple[str, str, Spec]]:
    """(command, flag, spec) of every numeric flag of every command."""
    found = []
    for command, (parser, words) in PARSERS.items():
        if parser is None:  # built inside parse_args: read it from there
            parser = _parser_of(command)
        for action in _actions(parser, words):
            spec = spec_of(action)
            if spec is not None:
                found.append((command, action.option_strings[-1], spec))
    return found


def _parser_of(command: str) -> argparse.ArgumentParser:
    """The parser that the command's ``main`` builds (caught as it starts parsing)."""
    module = importlib.import_module(COMMANDS[command.split()[0]][0])
    built: list[argparse.ArgumentParser] = []
    real = argparse.ArgumentParser.parse_args

    def keep(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        built.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = keep  # type: ignore[method-assign]
    saved, sys.argv = sys.argv, [f"tagger {command}"]
    try:
        with contextlib.suppress(SystemExit):
            module.main()
    finally:
        argparse.ArgumentParser.parse_args = real  # type: ignore[method-assign]
        sys.argv = saved
    return built[0]


FLAGS = _flags()


def test_no_numeric_flag_escapes_the_schema() -> None:
    """Every flag of every command typed int or float goes through tagger.cli.args (a new
    command must be added to PARSERS, so its flags are tried too)."""
    assert set(COMMANDS) == {command.split()[0] for command in PARSERS} | HYDRA_COMMANDS
    for command, (parser, words) in PARSERS.items():
        for action in _actions(parser or _parser_of(command), words):
            assert action.type not in (int, float), f"tagger {command} {action.option_strings}"
    flags = {(command, flag) for command, flag, _ in FLAGS}
    assert {("prepare folder", "--clip-seconds"), ("prepare folder", "--max-seconds"),
            ("prepare jamendo", "--min-seconds"), ("robustness", "--gains"),
            ("robustness", "--semitones"), ("robustness", "--rates"), ("robustness", "--snrs"),
            ("predict", "--hop"), ("embed", "--hop"), ("bench", "--steps"),
            ("check", "--workers")} <= flags  # fmt: skip


def run_tagger(argv: list[str]) -> tuple[int, str]:
    """``tagger ARGV`` in this process: (exit status, stderr); status 0 if it returned."""
    stderr = io.StringIO()
    saved = sys.argv
    sys.argv = ["tagger", *argv]
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            tagger_main()
    except SystemExit as stop:
        return int(stop.code or 0), stderr.getvalue()
    finally:
        sys.argv = saved
    return 0, stderr.getvalue()


def _bad_text(spec: Spec) -> st.SearchStrategy[str]:
    """Text a flag of ``spec`` must refuse: NaN, infinities, huge, words, out of range,
    fractions where a whole number is due."""
    words = st.sampled_from(["nan", "NaN", "inf", "-inf", "1e30", "-1e400", "", "abc", "1,5",
                             "0x10", "1_000_000_000_000"])  # fmt: skip
    outside = st.one_of(
        st.floats(max_value=spec.low, allow_nan=False, allow_infinity=False),
        st.floats(min_value=spec.high, allow_nan=False, allow_infinity=False),
    ).map(repr)
    fractions = st.floats(min_value=spec.low, max_value=spec.high).filter(
        lambda x: x != int(x)).map(repr)  # fmt: skip
    return st.one_of(words, outside, *([fractions] if spec.kind == "int" else []))


@pytest.mark.parametrize(("command", "flag", "spec"), FLAGS, ids=[f"{c} {f}" for c, f, _ in FLAGS])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_generated_bad_flag_values_exit_2_in_one_line(command, flag, spec, data) -> None:
    """(c) every numeric flag of every command, on generated bad values."""
    text = data.draw(_bad_text(spec))
    try:
        value: Any = int(text) if spec.kind == "int" else float(text)
    except ValueError:
        value = None
    assume(value is None or not spec.accepts(value))
    words = PARSERS[command][1]
    status, stderr = run_tagger([command.split()[0], *words, f"{flag}={text}"])
    assert status == 2 and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0] == stderr.strip().splitlines()[-1]
    assert f"argument {flag}: must be" in errors[0]


@pytest.mark.parametrize(("command", "flag", "spec"), FLAGS, ids=[f"{c} {f}" for c, f, _ in FLAGS])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_generated_good_flag_values_are_taken(command, flag, spec, data) -> None:
    """The other side: any value in range is taken as it is."""
    if spec.kind == "int":
        value: Any = data.draw(st.integers(int(spec.low), int(spec.high)))
    else:
        value = data.draw(st.floats(spec.low, spec.high, exclude_min=spec.low_open,
                                    exclude_max=spec.high_open))  # fmt: skip
    parser, words = PARSERS[command]
    action = next(a for a in _actions(parser or _parser_of(command), words)
                  if flag in a.option_strings)  # fmt: skip
    assert action.type(repr(value)) == value


@pytest.mark.parametrize(
    "argv",
    [
        ["prepare", "folder", "--root", "r", "--labels", "l", "--out", "o",
         "--clip-seconds", "nan"],
        ["prepare", "jamendo", "--audio", "a", "--splits", "s", "--out", "o",
         "--max-seconds", "inf"],
        ["robustness", "c.ckpt", "--gains", "3", "nan"],
        ["robustness", "c.ckpt", "--semitones", "100"],
        ["models", "baseline", "data.sample_rate=nan"],
        ["models", "baseline", "data.nokey=3"],
        ["models", "baseline", "data.subclip_len=10"],  # refused by the network, via Hydra
        ["check", "data.num_workers=-1"],
        ["bench", "--warmup", "-1"],
        ["bench", "--device", "foo"],
    ],
)  # fmt: skip
def test_the_issues_flags_are_refused_in_one_line(argv: list[str]) -> None:
    status, stderr = run_tagger(argv)
    assert status == 2 and "Traceback" not in stderr
    (error,) = [line for line in stderr.splitlines() if "error:" in line]
    assert error == stderr.strip().splitlines()[-1]


@pytest.mark.slow  # three real interpreters, the scripts end to end
@pytest.mark.parametrize(
    ("script", "overrides", "message"),
    [
        ("train.py", ["data.num_workers=-1"], "data.num_workers must be a whole number from 0"),
        ("train.py", ["optimizer.lr=nan"], "optimizer.lr must be a positive number, not nan"),
        ("eval.py", ["ckpt_path=x.ckpt", "+data.batch_size=0"], "data.batch_size must be a"),
    ],
)
def test_train_and_eval_refuse_bad_settings_in_one_line(tmp_path, script, overrides,
                                                        message) -> None:  # fmt: skip
    """(d) the scripts themselves: exit 2, one line, no traceback, nothing trained."""
    result = run_cli(str(REPO_ROOT / script), *overrides, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("tagger: error: ") and message in line
    assert not list(tmp_path.glob("outputs/*/runs/*/checkpoints"))


# --- a last training batch of one window -------------------------------------------------


class _Data:
    """What check_last_batch reads of a ClipDataModule."""

    def __init__(self, train_clips: int, batch_size: int, n_subclips: int = 1) -> None:
        self.sizes = {"train_clips": train_clips}
        self.batch_size, self.n_subclips = batch_size, n_subclips
        self.random_windows, self.train_subclips = False, n_subclips

    def split_sizes(self) -> dict[str, int]:
        return self.sizes


@given(clips=st.integers(1, 500), batch=st.integers(1, 64), windows=st.integers(1, 3),
       world=st.integers(1, 4))  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_a_last_batch_of_one_window_is_refused_exactly_when_it_occurs(clips, batch, windows,
                                                                      world) -> None:  # fmt: skip
    with_bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    per_process = -(-clips // world)  # Lightning pads the shards to equal sizes
    last = per_process - batch * ((per_process - 1) // batch)
    single = last * windows == 1
    data = _Data(clips, batch, windows)
    if single:
        with pytest.raises(ConfigError, match=r"^data\.batch_size=\d+: the training split"):
            check_last_batch(with_bn, data, world)
    else:
        check_last_batch(with_bn, data, world)
    check_last_batch(nn.Linear(4, 4), data, world)  # without batch norm a batch of one trains


def test_a_batch_of_one_clip_would_crash_batch_norm_and_is_refused_first(
    train_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finding: 11 clips in batches of 10, one window each; the last batch crashed at
    the end of the first epoch. Refused in one line before training; without the check,
    the run does crash (so the check is what stops it)."""
    overrides = ("data.train_clips=11", "data.n_subclips=1", "logger=csv")
    with pytest.raises(ConfigError, match="the training split has 11 clips"):
        train(train_config(*overrides, run="refused"))
    monkeypatch.setattr(tagger.train, "check_last_batch", lambda *args: None)
    with pytest.raises(Exception) as crash:
        train(train_config(*overrides, run="unchecked"))
    assert "Expected more than 1 value per channel when training" in str(crash.value)
    assert torch.is_grad_enabled()


# --- the settings a checkpoint stores ----------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Path:
    """A real checkpoint of a tiny run (one epoch, seconds)."""
    return tiny_checkpoint


@pytest.mark.parametrize(
    ("where", "key", "value", "message"),
    [
        ("hyper_parameters", "net.filters", [32, 10**9, 32], "model.net.filters.1 must be"),
        ("hyper_parameters", "input_scale", math.nan, "input_scale must be a positive"),
        ("config", "data.num_workers", -1, "data.num_workers must be a whole number from 0"),
        ("config", "data.batch_size", "ten", "data.batch_size must be a whole number"),
    ],
)
def test_a_checkpoints_stored_settings_pass_the_schema(checkpoint: Path, tmp_path: Path, where,
                                                       key, value, message) -> None:  # fmt: skip
    """A crafted checkpoint's numbers are refused in one line naming the file, before the
    model is built."""
    contents = torch.load(checkpoint, weights_only=True)
    node = contents[where]
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    crafted = tmp_path / "crafted.ckpt"
    torch.save(contents, crafted)
    with pytest.raises(ConfigError) as error:
        load_trained(crafted)
    assert str(error.value).startswith(f"checkpoint {crafted}: ") and message in str(error.value)
    assert "\n" not in str(error.value)
    load_trained(checkpoint)  # the real one loads


# --- overrides Hydra cannot compose, configs a class refuses ------------------------------

#: Overrides that pass no setting's range but that Hydra or the built class refuses.
HYDRA_REFUSED = st.one_of(
    st.builds(lambda k: f"+data.{k}=1", st.from_regex(r"[a-z]{3,8}", fullmatch=True)),
    st.builds(lambda k: f"+model.net.{k}=1", st.from_regex(r"[a-z]{3,8}", fullmatch=True)),
    st.builds(lambda k: f"{k}=1", st.from_regex(r"nokey_[a-z]{1,6}", fullmatch=True)),
    st.builds(lambda n: f"model.net.filters=[{','.join(['8'] * n)}]",
              st.sampled_from([0, 1, 2, 4])),
    st.sampled_from(["data.batch_size=[1,2", "trainer.accumulate_grad_batches=2",
                     "model.net=3", "optimizer=", "data.sample_rate=${nope}"]),
)  # fmt: skip


@pytest.mark.slow  # twelve generated runs of train.py in this process
@settings(max_examples=12, deadline=None)
@given(override=HYDRA_REFUSED)
def test_overrides_hydra_or_a_class_refuses_are_one_line(
    tmp_path_factory: pytest.TempPathFactory, override: str
) -> None:
    """``train.py`` in process: exit 2 and one ``tagger: error:`` line naming the cause,
    whether Hydra cannot compose the override or the class it builds refuses it."""
    from tagger.cli import train as train_cli

    run_dir = tmp_path_factory.mktemp("hydra_refused")
    argv = ["train.py", override, f"hydra.run.dir={run_dir}", *TINY]
    err = io.StringIO()
    old, full_error = sys.argv, os.environ.pop("HYDRA_FULL_ERROR", None)  # that shows all
    sys.argv = argv
    try:
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
            train_cli.main()
    finally:
        sys.argv = old
        if full_error is not None:
            os.environ["HYDRA_FULL_ERROR"] = full_error
    lines = err.getvalue().strip().splitlines()
    assert stop.value.code == 2, (override, err.getvalue()[-1000:])
    assert len(lines) == 1 and lines[0].startswith("tagger: error: "), (override, lines)
    assert "Traceback" not in err.getvalue()
    assert not (run_dir / "checkpoints").exists()
