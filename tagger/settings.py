"""The schema of every setting: one typed ``Spec`` with its range per config key, checked
in one place, ``check_settings``, before anything is built.

``SETTINGS`` maps dotted keys of the composed ``train.py`` and ``eval.py`` configs (a
``*`` stands for one part of the key: a list index or a group entry) to their ``Spec``.
``check_settings`` walks every leaf of a config, resolves the leaves that have a spec and
refuses a value outside it in one line that names the key, what it takes and how to fix
it; a leaf without a spec is only refused when it is NaN or infinite. The command line's
flags use the same ``Spec`` (``tagger.cli.args``), so a number is judged the same way
wherever it comes from. Every numeric leaf of every option of every config group has a
spec (``tests/test_gate_settings.py``): a new key cannot be added without its range.

``check_last_batch`` is the one rule that needs the data's size: a training batch of a
single window cannot pass batch norm.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from tagger.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig, ListConfig, Node
    from torch import nn

# omegaconf and torch are imported where they are used: the command line's flags
# (tagger.cli.args) take this module's Spec in an install with neither (tagger predict
# BUNDLE: numpy, soundfile, soxr and onnxruntime alone).

KINDS = ("int", "float", "bool", "str", "choice", "count_or_fraction")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Spec:
    """What one setting takes.

    Args:
        kind: ``int`` (a whole number), ``float`` (any finite number), ``bool``, ``str``,
            ``choice`` (one of ``choices``) or ``count_or_fraction`` (a whole number of
            batches from ``low`` to ``high``, or a fraction from 0 to 1, as Lightning's
            ``limit_*_batches`` take).
        low, high: the inclusive range of a number; ``low_open``/``high_open`` exclude
            the bound itself.
        null: what null means, when null is allowed.
        special: values outside the range that mean something, with their meaning
            (``((-1, "no limit"),)``); matched by type and value.
        choices: the values of a ``choice``.
        unit: what the number counts, shown after the kind (``" (clips per batch)"``).
        phrase: what a value in range is, when the generated words do not fit.
        hint: how to fix a bad value, shown after it.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    null: str | None = None
    special: tuple[tuple[Any, str], ...] = ()
    choices: tuple[Any, ...] = ()
    unit: str = ""
    phrase: str = ""
    hint: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Spec kind must be one of {KINDS}, not {self.kind!r}")
        numeric = self.kind in ("int", "float", "count_or_fraction")
        if numeric and not (_number(self.low) and _number(self.high)
                            and math.isfinite(self.low) and math.isfinite(self.high)):  # fmt: skip
            raise ValueError(f"a {self.kind} Spec needs a finite low and high")

    @property
    def numeric(self) -> bool:
        """Whether the setting is a number (int, float or count_or_fraction)."""
        return self.kind in ("int", "float", "count_or_fraction")

    def is_special(self, value: Any) -> bool:
        """Whether ``value`` is one of the special values (same type, same value)."""
        return any(type(value) is type(s) and value == s for s, _ in self.special)

    def _right_kind(self, value: Any) -> bool:
        if self.kind == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if self.kind in ("float", "count_or_fraction"):
            return _number(value)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str)
        return any(type(value) is type(c) and value == c for c in self.choices)

    def _in_range(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.kind == "count_or_fraction" and isinstance(value, float):
            return 0.0 <= value <= 1.0
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is a valid setting: in range, null where allowed, or special."""
        if value is None:
            return self.null is not None
        if self.is_special(value):
            return True
        return self._right_kind(value) and (not self.numeric or self._in_range(value))

    def _kind_words(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.choices))
        return {"int": "a whole number", "float": "a number", "bool": "true or false",
                "str": "text", "count_or_fraction": "a whole number of batches or a "
                "fraction"}[self.kind] + self.unit  # fmt: skip

    def _range_words(self) -> tuple[str, bool]:
        """What a value in range is, and whether those words already give the bounds."""
        if self.phrase:
            return self.phrase + self.unit, False
        if self.kind == "int" and self.low == 1 and not self.low_open:
            return "a positive whole number" + self.unit, False
        if self.kind == "float" and self.low == 0 and self.low_open:
            return "a positive number" + self.unit, False
        kind = "a number" if self.kind == "float" else "a whole number"
        if self.unit.startswith(" of "):  # a number of seconds from 0 to 10
            return f"{kind}{self.unit} {self.bounds()}", True
        return f"{kind} {self.bounds()}{self.unit}", True

    def bounds(self) -> str:
        """The range in words: ``from 1 to 100000``, ``above 0 to 10``, ``from 0 to below 1``."""

        def show(x: float) -> str:
            return f"{x:g}" if isinstance(x, float) else str(x)

        start = "above" if self.low_open else "from"
        end = "to below" if self.high_open else "to"
        words = f"{start} {show(self.low)} {end} {show(self.high)}"
        if self.kind == "count_or_fraction":
            words += " batches, or a fraction from 0.0 to 1.0"
        return words

    def problem(self, value: Any, shown: str | None = None) -> str | None:
        """None for a valid ``value``, else what is wrong with it:
        ``must be WHAT, not VALUE (HINT; RANGE; MEANINGS)``; VALUE is ``shown`` if given
        (the text of a flag), else the value's repr."""
        if self.accepts(value):
            return None
        notes = [self.hint] if self.hint else []
        meanings = [f"{s!r}: {meaning}" for s, meaning in self.special]
        if value is not None and not self._right_kind(value):
            what = self._kind_words() + (f" (or null: {self.null})" if self.null else "")
            bounded = False
        else:
            what, bounded = self._range_words() if self.numeric else (self._kind_words(), True)
            if self.null:
                meanings.append(f"null: {self.null}")
        if self.numeric and not bounded:
            notes.append(self.bounds())
        if meanings:
            notes.append("or " + ", ".join(meanings))
        if shown is None:
            shown = "null" if value is None else repr(value)
        return f"must be {what}, not {shown}" + (f" ({'; '.join(notes)})" if notes else "")

    def check(self, key: str, value: Any) -> None:
        """Raise ``ConfigError`` naming ``key`` unless ``value`` is valid."""
        problem = self.problem(value)
        if problem is not None:
            raise ConfigError(f"{key} {problem}")


_MAX_SEED = 2**32 - 1  # Lightning's seed_everything replaces a larger seed with a random one
SEED = Spec("int", 0, _MAX_SEED)
SAMPLE_RATE = Spec("int", 1000, 384_000, unit=" (Hz)")
PROBABILITY = Spec("float", 0.0, 1.0, unit=" (a probability)")
DROPOUT = Spec("float", 0.0, 1.0, high_open=True, unit=" (a dropout probability)")
WIDTH = Spec("int", 1, 65_536, unit=" (channels or units)")
KERNEL = Spec("int", 1, 65_536, unit=" (samples or frames)")
FLAG = Spec("bool")
TEXT = Spec("str")
STEPS = 10**12


def _samples(alias: str) -> Spec:
    return Spec("int", 1, 10_000_000, unit=" of samples", phrase="a positive number",
                hint=f"set {alias}=N or conv.{alias}=N with N >= 1")  # fmt: skip


def _batches(null: str | None = None) -> Spec:
    return Spec("count_or_fraction", 0, STEPS, null=null)


#: Every setting, in the order they are checked: the keys a user sets before the keys
#: that take their values from them (``${...}``), so the message names the one to change.
# fmt: off
SETTINGS: dict[str, Spec] = {
    # run
    "seed": Spec("int", 0, _MAX_SEED, null="not seeded",
                 hint="with null, give data.shuffle_seed=N too"),
    "conv.length": _samples("length"),
    "conv.stride": _samples("stride"),
    "length": _samples("length"),
    "stride": _samples("stride"),
    "ckpt_path": Spec("str", null="a fresh start"),
    "init_from": Spec("str", null="the model's own initialisation",
                      hint="a checkpoint of train.py to fine-tune from (docs/training.md)"),
    "test": FLAG,
    "compile": FLAG,
    "task_name": TEXT,
    "optimized_metric": TEXT,
    "tags.*": TEXT,
    "split": Spec("choice", choices=("auto", "test", "val")),
    "trusted_modules.*": TEXT,
    "decisions.rule": Spec("choice", choices=("per_tag", "shared"),
                           hint="per_tag: each tag's F1-best threshold on validation; "
                           "shared: one for every tag (tagger.decisions)"),
    # data
    "data.batch_size": Spec("int", 1, 100_000, unit=" (clips per batch)"),
    "data.n_subclips": Spec("int", 1, 100_000, unit=" (windows per clip)"),
    "data.subclip_len": Spec("int", 1, 100_000_000, unit=" (samples per window)"),
    "data.sample_rate": SAMPLE_RATE,
    "data.train_clips": Spec("int", 1, 100_000_000, unit=" (training clips)"),
    "data.val_clips": Spec("int", 1, 100_000_000, unit=" (validation clips)"),
    "data.test_clips": Spec("int", 0, 100_000_000, unit=" (test clips; 0: no test split)"),
    "data.num_workers": Spec("int", 0, 1024,
                             unit=" (loader processes; 0 loads in the main process)"),
    "data.data_seed": SEED,
    "data.split_seed": SEED,
    "data.shuffle_seed": Spec("int", 0, _MAX_SEED,
                              hint="it is seed's value unless set: with seed=null give "
                              "data.shuffle_seed=N"),
    "data.train_subclips": Spec("int", 1, 100_000, null="data.n_subclips",
                                unit=" (random windows per training clip)"),
    "data.val_fraction": Spec("float", 0.0, 1.0, low_open=True, high_open=True,
                              null="the source's own validation split"),
    "data.val_parts.*": TEXT,
    "data.eval_windows": Spec("choice", choices=("spread", "all")),
    "data.on_device": FLAG,
    "data.random_windows": FLAG,
    "data.path": Spec("str", null="no store"),
    "data.root": Spec("str", null="no folder"),
    # model
    "model.aggregation": TEXT,
    "model.input_scale": Spec("float", 0.0, 1e9, low_open=True,
                              unit=" (the samples are divided by it)"),
    "model.finite_check_every": Spec("int", 1, STEPS, null="every step"),
    "model.freeze": Spec("choice", choices=("none", "front_end", "all_but_output"),
                         hint="the part of the network that does not train "
                         "(tagger.models.parts)"),
    "model.net.subclip_len": Spec("int", 1, 100_000_000, unit=" (samples per window)"),
    "model.net.sample_rate": SAMPLE_RATE,
    "model.net.conv_length": _samples("length"),
    "model.net.conv_stride": _samples("stride"),
    "model.net.filters.*": WIDTH,
    "model.net.channels.*": WIDTH,
    "model.net.final_channels": WIDTH,
    "model.net.dense_units": WIDTH,
    "model.net.n_mels": Spec("int", 1, 4096, unit=" (mel bands)"),
    "model.net.kernel_size": KERNEL,
    "model.net.pool_size": KERNEL,
    "model.net.feature_pool_size": KERNEL,
    "model.net.feature_pool": TEXT,
    "model.net.nonlinearity": TEXT,
    "model.net.batch_norm": FLAG,
    "model.net.log_c": Spec("float", 0.0, 1e12, low_open=True),
    "model.net.dropout": DROPOUT,
    "model.net.block_dropout": DROPOUT,
    "model.net.amplifying_ratio": Spec("float", 0.0, 4096.0, low_open=True),
    "model.net.aggregated_blocks": Spec("int", 1, 1000, unit=" (blocks)"),
    # optimizer and schedule
    "optimizer.lr": Spec("float", 0.0, 10.0, low_open=True),
    "optimizer.momentum": Spec("float", 0.0, 1.0, high_open=True),
    "optimizer.dampening": Spec("float", 0.0, 1.0),
    "optimizer.weight_decay": Spec("float", 0.0, 1.0),
    "optimizer.betas.*": Spec("float", 0.0, 1.0, high_open=True),
    "optimizer.eps": Spec("float", 0.0, 1.0, low_open=True),
    "optimizer.nesterov": FLAG,
    "optimizer.amsgrad": FLAG,
    "trainer.max_epochs": Spec("int", 1, 1_000_000, null="no epoch limit",
                               hint="for no epoch limit: trainer.max_epochs=null, then "
                               "trainer.max_steps=N, early stopping or a signal ends the "
                               "run"),
    "trainer.min_epochs": Spec("int", 0, 1_000_000),
    "trainer.max_steps": Spec("int", 1, STEPS, special=((-1, "no limit"),)),
    "scheduler.T_max": Spec("int", 1, 1_000_000, unit=" of epochs",
                            hint="scheduler=cosine takes trainer.max_epochs; set one or the "
                            "other"),
    "scheduler.eta_min": Spec("float", 0.0, 10.0),
    "scheduler.step_size": Spec("int", 1, 1_000_000, unit=" (epochs)"),
    "scheduler.gamma": Spec("float", 0.0, 1.0, low_open=True),
    # trainer
    "trainer.check_val_every_n_epoch": Spec("int", 1, 1_000_000,
                                            null="validate by trainer.val_check_interval"),
    "trainer.val_check_interval": _batches(null="once per epoch"),
    "trainer.log_every_n_steps": Spec("int", 1, STEPS),
    "trainer.accumulate_grad_batches": Spec("int", 1, 100_000),
    "trainer.gradient_clip_val": Spec("float", 0.0, 1e9, null="no clipping"),
    "trainer.num_sanity_val_steps": Spec("int", 0, STEPS, special=((-1, "every batch"),)),
    "trainer.fast_dev_run": Spec("int", 1, STEPS, special=((True, "one batch"), (False, "off"))),
    "trainer.overfit_batches": _batches(),
    "trainer.limit_train_batches": _batches(null="every batch"),
    "trainer.limit_val_batches": _batches(null="every batch"),
    "trainer.limit_test_batches": _batches(null="every batch"),
    "trainer.limit_predict_batches": _batches(null="every batch"),
    "trainer.devices": Spec("int", 1, 65_536, special=((-1, "every device"),
                                                       ("auto", "as the accelerator has"))),
    "trainer.devices.*": Spec("int", 0, 65_536, unit=" (a device index)"),
    "trainer.num_nodes": Spec("int", 1, 100_000),
    "trainer.precision": Spec("choice", choices=(
        "32-true", "32", 32, "16-mixed", "16", 16, "bf16-mixed", "bf16", "16-true",
        "bf16-true", "64-true", "64", 64, "transformer-engine", "transformer-engine-float16",
    )),
    "trainer.accelerator": TEXT,
    "trainer.strategy": TEXT,
    "trainer.default_root_dir": TEXT,
    "trainer.deterministic": Spec("bool", special=(("warn", "warn where not deterministic"),)),
    "trainer.sync_batchnorm": FLAG,
    "trainer.benchmark": FLAG,
    "trainer.enable_progress_bar": FLAG,
    "trainer.enable_model_summary": FLAG,
    "trainer.enable_checkpointing": FLAG,
    "trainer.plugins.*.auto_requeue": FLAG,
    # callbacks and loggers
    "callbacks.*.monitor": TEXT,
    "callbacks.*.mode": Spec("choice", choices=("min", "max")),
    "callbacks.*.dirpath": TEXT,
    "callbacks.*.filename": TEXT,
    "callbacks.early_stopping.patience": Spec("int", 0, 1_000_000, unit=" (validations)"),
    "callbacks.early_stopping.min_delta": Spec("float", 0.0, 1.0),
    "callbacks.model_checkpoint.save_top_k": Spec(
        "int", 0, 1_000_000, special=((-1, "every checkpoint"),)
    ),
    "callbacks.model_checkpoint.save_last": FLAG,
    "callbacks.model_checkpoint.auto_insert_metric_name": FLAG,
    "callbacks.step_checkpoint.every_n_train_steps": Spec("int", 0, STEPS, unit=" (0: off)"),
    "callbacks.progress_bar.refresh_rate": Spec("int", 0, STEPS, unit=" (0: off)"),
    "callbacks.step_log.every_n_steps": Spec("int", 1, STEPS),
    "callbacks.lr_monitor.logging_interval": Spec("choice", null="both",
                                                  choices=("step", "epoch")),
    "logger.*.default_hp_metric": FLAG,
    # augment (tagger.augment)
    "augment.sample_rate": SAMPLE_RATE,
    "augment.seed": Spec("int", 0, _MAX_SEED, null="0"),
    "augment.*.p": PROBABILITY,
    "augment.gain.db.*": Spec("float", -60.0, 60.0, unit=" (dB)"),
    "augment.mixup.alpha": Spec("float", 0.0, 100.0, low_open=True),
    "augment.filter.kinds.*": TEXT,
    "augment.filter.lowpass_hz.*": Spec("float", 0.0, 192_000.0, low_open=True, unit=" (Hz)"),
    "augment.filter.highpass_hz.*": Spec("float", 0.0, 192_000.0, low_open=True, unit=" (Hz)"),
    "augment.pitch.semitones.*": Spec("float", -12.0, 12.0, unit=" (semitones)",
                                      hint="an octave at most"),
    "augment.pitch.method": TEXT,
    "augment.noise.snr_db.*": Spec("float", -30.0, 100.0, unit=" (dB)"),
}
# fmt: on


def spec_for(key: str) -> tuple[int, Spec] | None:
    """The first ``SETTINGS`` entry matching the dotted ``key`` (a ``*`` matches one part),
    with its place in the table; None when no entry matches."""
    parts = key.split(".")
    for place, (pattern, spec) in enumerate(SETTINGS.items()):
        wanted = pattern.split(".")
        if len(wanted) == len(parts) and all(map(fnmatchcase, parts, wanted)):
            return place, spec
    return None


def leaves(node: DictConfig | ListConfig, prefix: str = "") -> Iterator[tuple[str, Node]]:
    """Every leaf of a config: (dotted key, its node), depth first, in the config's order."""
    from omegaconf import DictConfig, ListConfig

    items = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in items:
        child = node._get_node(key)
        name = f"{prefix}{key}"
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_none() \
                and not child._is_missing() and not child._is_interpolation():  # fmt: skip
            yield from leaves(child, f"{name}.")
        else:
            yield name, child


_REFERENCE = re.compile(r"^\$\{([\w.]+)\}$")


def _from_resolver(cfg: DictConfig, node: Node) -> bool:
    """Whether ``node`` takes its value, through plain ``${key}`` references, from a
    resolver such as ``${store_sample_rate:...}`` (None there: no store at data.path,
    which the data module then reports)."""
    for _ in range(32):
        if not node._is_interpolation():
            return False
        found = _REFERENCE.match(str(node._value()))
        if not found:
            return True
        node = _node_at(cfg, found.group(1))
        if node is None:
            return False
    return False


def _node_at(cfg: DictConfig, key: str) -> Node | None:
    """The node at dotted ``key`` of ``cfg``, or None."""
    from omegaconf import DictConfig, ListConfig

    node: Any = cfg
    for part in key.split("."):
        if isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        elif isinstance(node, DictConfig):
            node = node._get_node(part)
        else:
            return None
        if node is None:
            return None
    return node


def _value(key: str, node: Node) -> Any:
    """The leaf's value, interpolations resolved; ``ConfigError`` naming ``key`` when it
    cannot be resolved (another setting's ``ConfigError`` passes through)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return node._dereference_node()._value() if node._is_interpolation() else node._value()
    except ConfigError:
        raise
    except (OmegaConfBaseException, ValueError, TypeError, ZeroDivisionError) as error:
        raise ConfigError(f"{key}: cannot be resolved ({str(error).splitlines()[0]})") from None


def _plain_leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of plain data (dicts and lists, as read from a file): (dotted key, value)."""
    if isinstance(node, Mapping):
        for key, child in node.items():
            yield from _plain_leaves(child, f"{prefix}{key}.")
    elif isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        for index, child in enumerate(node):
            yield from _plain_leaves(child, f"{prefix}{index}.")
    else:
        yield prefix[:-1], node


def _check_one(key: str, value: Any) -> None:
    """A leaf without a spec: only a NaN or infinite number is refused."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, not {value}")


def check_settings(cfg: DictConfig | Mapping[str, Any], prefix: str = "") -> None:
    """Raise ``ConfigError`` for the first setting of a composed config (``train.py``'s or
    ``eval.py``'s; or, with ``prefix``, a part of one such as ``augment.``) that its
    ``Spec`` refuses, or for any NaN or infinite number. Settings are checked in
    ``SETTINGS`` order; missing values (``???``) are left to their consumer.

    ``cfg`` may also be plain data (a dict, such as the run config stored in a
    checkpoint): its values are taken as they are, never resolved (a ``${...}`` there is
    text), so nothing read from a file runs a resolver."""
    from omegaconf import DictConfig

    specs = list(SETTINGS.values())
    if not isinstance(cfg, DictConfig):
        found_plain = []
        for key, value in _plain_leaves(cfg):
            found = spec_for(prefix + key)
            if found is None:
                _check_one(prefix + key, value)
            else:
                found_plain.append((found[0], key, value))
        for place, key, value in sorted(found_plain, key=lambda item: item[0]):
            specs[place].check(prefix + key, value)
        return
    checked: list[tuple[int, str, Node]] = []
    for key, node in leaves(cfg):
        if node._is_missing():
            continue
        found = spec_for(prefix + key)
        if found is None:
            _check_one(prefix + key, None if node._is_interpolation() else node._value())
            continue
        checked.append((found[0], key, node))
    for place, key, node in sorted(checked, key=lambda item: item[0]):
        spec = specs[place]
        if spec.kind == "str" and node._is_interpolation():
            continue  # a path such as ${paths.output_dir}/checkpoints: its source's business
        value = _value(prefix + key, node)
        if value is None and _from_resolver(node._get_root(), node):
            continue
        spec.check(prefix + key, value)


def check_stored_settings(config: Mapping[str, Any], hparams: Mapping[str, Any],
                          source: str) -> None:  # fmt: skip
    """The settings a checkpoint stores, checked as ``train.py`` checked them: its run
    ``config`` and the module's hyperparameters (``net``, ``optimizer``, ``scheduler``,
    ``aggregation``, ``input_scale``: what the model is rebuilt from), as plain data.
    ``ConfigError`` names ``source`` (a crafted checkpoint's huge layer or NaN scale is
    refused in one line, not a crash while building)."""
    model = {key: value for key, value in hparams.items()
             if key not in ("optimizer", "scheduler", "tag_names")}  # fmt: skip
    stored = {"model": model, "optimizer": hparams.get("optimizer") or {},
              "scheduler": hparams.get("scheduler") or {}}  # fmt: skip
    try:
        check_settings(config)
        check_settings(stored)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def check_last_batch(model: nn.Module, datamodule: Any, world_size: int = 1) -> None:
    """Refuse training data whose last batch of an epoch would hold a single window (one
    clip of one window) when ``model`` has batch norm, which cannot train on one example:
    the run would stop there, at the end of its first epoch, with a traceback. Dropping
    that batch instead would silently change what is trained on, so the user chooses
    another ``data.batch_size``, or more windows per clip. ``datamodule`` is a
    ``ClipDataModule`` (its training split, batch size and windows per training clip);
    under DDP each of ``world_size`` processes takes ceil(clips / world_size) clips
    (Lightning pads the shards)."""
    from torch import nn

    if not any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules()):
        return
    train_clips = datamodule.split_sizes()["train_clips"]
    batch_size = datamodule.batch_size
    windows = datamodule.train_subclips if datamodule.random_windows else datamodule.n_subclips
    per_process = -(-train_clips // world_size)
    last = per_process % batch_size or batch_size
    if last * windows == 1:
        clips = f"{per_process} clips per process" if world_size > 1 else f"{train_clips} clips"
        raise ConfigError(
            f"data.batch_size={batch_size}: the training split has {clips}, so the last "
            "batch of every epoch holds a single clip of one window, which batch norm "
            "cannot train on; choose a data.batch_size that leaves 2 or more clips in the "
            "last batch (or give each clip more windows: data.n_subclips, "
            "data.train_subclips)"
        )


def lightning_max_epochs(max_epochs: int | None) -> int:
    """``trainer.max_epochs`` as Lightning takes it: null (no limit) is Lightning's -1; its
    own null would mean 1000 epochs."""
    return -1 if max_epochs is None else max_epochs
