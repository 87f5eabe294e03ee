"""The LightningModule: any tagging network, clip-level aggregation, loss, metrics, optimizer."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from lightning import LightningModule
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from tagger.aggregation import AGGREGATIONS, Aggregation, clip_loss, clip_probabilities
from tagger.checkpoint_io import read_checkpoint
from tagger.decisions import CHECKPOINT_KEY, stored_thresholds
from tagger.errors import ConfigError
from tagger.metrics import EpochTagScores
from tagger.models.parts import frozen_modules, output_layer_name
from tagger.settings import check_stored_settings
from tagger.targets import check_hyperparameters, check_stored_config, check_stored_data

log = logging.getLogger(__name__)


def _plain(config: DictConfig | dict | None) -> dict | None:
    """A resolved plain-dict copy of a config node, so checkpoints hold no OmegaConf objects."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return None if config is None else dict(config)


def _factory(config: dict, group: str) -> Callable[..., Any]:
    """The factory a ``_partial_: true`` config of ``conf/<group>`` describes."""
    if not config.get("_partial_"):
        raise ConfigError(
            f"the {group} config of {config.get('_target_')!r} must be a factory: "
            f"add `_partial_: true` to it, as in conf/{group}/*.yaml"
        )
    return instantiate(config)


def subclip_logits(net: nn.Module, audio: Tensor, input_scale: float) -> Tensor:
    """Raw clips [B, n, 1, T], float or int16, -> ``net``'s logits per sub-clip [B, n, K].

    Samples are divided by ``input_scale``; int16 batches (``data.on_device``) are
    converted in one pass and scaled in place.
    """
    batch, n_subclips = audio.shape[0], audio.shape[1]
    x = audio.flatten(0, 1)  # [B * n, 1, T]
    # int16 (data.on_device): the conversion makes a new tensor, so scale it in place
    x = x / input_scale if x.is_floating_point() else x.to(torch.float32).div_(input_scale)
    return net(x).reshape(batch, n_subclips, -1)  # [B * n, K] -> [B, n, K]


def _numpy_rng_state() -> tuple:
    """numpy's global RNG state with its key array as a tensor (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


class TaggingModule(LightningModule):
    """Trains a sub-clip network on clips: logits per sub-clip, averaged per clip.

    Everything needed to rebuild the module is stored in its hyperparameters as plain
    ``_target_`` dicts, so ``TaggingModule.load_from_checkpoint(path)`` alone restores it
    (weights-only: a checkpoint holds plain data, never a factory object).

    Args:
        net: ``_target_`` config of an ``nn.Module`` mapping [N, 1, T] -> [N, num_tags];
            it receives ``num_tags=len(tag_names)``.
        optimizer: ``_partial_: true`` config of a ``torch.optim.Optimizer``
            (``conf/optimizer``): a factory that ``configure_optimizers`` calls with the
            module's parameters.
        tag_names: names of the tags, in label-column order.
        scheduler: optional ``_partial_: true`` config of an epoch-wise LR scheduler
            (``conf/scheduler``), called with the optimizer.
        aggregation: ``mean_logits`` (average logits, then sigmoid) or ``mean_probs``.
        input_scale: raw samples are divided by this (32768 maps int16-scale audio to
            [-1, 1]; use 1 for audio that is already in [-1, 1]).
        finite_check_every: how often, in training steps, a NaN or infinite training loss
            is looked for; None: every step on CPU, every 50 on an accelerator, where a
            look waits for the device. Between looks the first bad step is noted on the
            device, and a look always comes before a checkpoint is saved, so none holds
            the weights of a diverged step. (Not a hyperparameter: not in checkpoints.)
        freeze: the part of the network that training leaves as it is (``model.freeze``;
            ``tagger.models.parts``): ``none``, ``front_end`` or ``all_but_output`` (a
            linear probe). Its parameters do not train and its modules run in eval mode,
            so batch norm there keeps its running statistics and dropout there is off.
            (Not a hyperparameter: a checkpoint holds the whole network either way.)
    """

    def __init__(
        self,
        net: dict,
        optimizer: dict,
        tag_names: list[str],
        scheduler: dict | None = None,
        aggregation: Aggregation = "mean_logits",
        input_scale: float = 32768.0,
        finite_check_every: int | None = None,
        freeze: str = "none",
    ) -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"model.aggregation must be one of {', '.join(AGGREGATIONS)}, not {aggregation!r}"
            )
        if input_scale <= 0:
            raise ConfigError(f"model.input_scale must be positive, not {input_scale}")
        self.save_hyperparameters(
            {
                "net": _plain(net),
                "optimizer": _plain(optimizer),
                "tag_names": list(tag_names),
                "scheduler": _plain(scheduler),
                "aggregation": aggregation,
                "input_scale": float(input_scale),
            }
        )
        self.tag_names = list(tag_names)
        self.net = instantiate(self.hparams.net, num_tags=len(self.tag_names))
        self.frozen_part = freeze
        self._frozen = [module.eval() for _, module in freeze_part(self.net, freeze)]
        # the optimizer and scheduler as factories, built from the plain configs in hparams
        self.optimizer_factory = _factory(self.hparams.optimizer, "optimizer")
        self.scheduler_factory: Callable[..., Any] | None = None
        if self.hparams.scheduler is not None:
            self.scheduler_factory = _factory(self.hparams.scheduler, "scheduler")
        self.train_scores = EpochTagScores(len(self.tag_names))
        self.val_scores = EpochTagScores(len(self.tag_names))
        self.test_scores = EpochTagScores(len(self.tag_names))
        self._reported_skips: dict[str, list[str]] = {}
        self.finite_check_every = finite_check_every
        self._diverged: Tensor | None = None  # on the device: [first bad step or -1, loss, epoch]
        # the decision thresholds of the checkpoint it was loaded from (``load_trained``;
        # ``tagger.decisions.stored_thresholds``), None for a run that stores none
        self.thresholds: dict[str, Any] | None = None

    def train(self, mode: bool = True) -> TaggingModule:
        """As ``nn.Module.train``, but the frozen part (``freeze``) stays in eval mode."""
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def forward(self, audio: Tensor) -> Tensor:
        """Raw clips [B, n_subclips, 1, T], float or int16 -> sub-clip logits [B, n_subclips, K]."""
        return subclip_logits(self.net, audio, self.hparams.input_scale)

    def predict_clips(self, audio: Tensor) -> Tensor:
        """Raw clips [B, n_subclips, 1, T] -> tag probabilities [B, K]."""
        return clip_probabilities(self(audio), self.hparams.aggregation)

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self(batch["audio"])
        loss = clip_loss(logits, batch["labels"], self.hparams.aggregation)
        if stage == "train":
            self._note_divergence(loss.detach())
        elif not torch.isfinite(loss):
            raise FloatingPointError(f"{stage} loss is {loss.item()} at step {self.global_step}")
        probs = clip_probabilities(logits.detach(), self.hparams.aggregation)
        getattr(self, f"{stage}_scores").update(probs, batch["labels"])
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        # train/loss of every step is logged by the StepLog callback (conf/callbacks/step_log)
        return self._shared_step(batch, "train")

    def _note_divergence(self, loss: Tensor) -> None:
        """Note the first step with a NaN or infinite loss, on the device (no waiting)."""
        if self._diverged is None or self._diverged.device != loss.device:
            self._diverged = torch.tensor([-1.0, 0.0, 0.0], device=loss.device)
        step, value, epoch = self._diverged
        first = (step < 0) & ~torch.isfinite(loss)
        self._diverged = torch.stack([
            torch.where(first, float(self.global_step), step),
            torch.where(first, loss.float(), value),
            torch.where(first, float(self.current_epoch), epoch),
        ])  # fmt: skip

    def _stop_if_diverged(self) -> None:
        """Raise ``FloatingPointError`` naming the first step whose training loss was not finite."""
        if self._diverged is None:
            return
        step, loss, epoch = self._diverged.tolist()
        if step >= 0:
            raise FloatingPointError(
                f"train loss is {loss} at step {int(step)} (epoch {int(epoch)}); training stopped"
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        every = self.finite_check_every or (1 if self.device.type == "cpu" else 50)
        if self.global_step % every == 0:
            self._stop_if_diverged()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss = self._shared_step(batch, "val")
        self.log("val/loss", loss, on_epoch=True, batch_size=len(batch["labels"]), sync_dist=True)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss = self._shared_step(batch, "test")
        self.log("test/loss", loss, on_epoch=True, batch_size=len(batch["labels"]), sync_dist=True)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {
            "index": batch["index"],
            "probs": self.predict_clips(batch["audio"]),
            "labels": batch["labels"],
        }

    def _log_epoch_scores(self, stage: str, per_tag: bool = False) -> None:
        """Log the epoch's macro ``<stage>/auc`` and ``<stage>/pr_auc`` and, with ``per_tag``,
        ``<stage>_tag_auc/<tag>`` and ``<stage>_tag_pr_auc/<tag>`` for each tag that can be
        scored (tags without a positive or a negative clip are left out). These are the stage's
        results: ``trainer.validate`` and ``trainer.test`` return them and
        ``trainer.callback_metrics`` holds them."""
        metric: EpochTagScores = getattr(self, f"{stage}_scores")
        scores = metric.compute()
        metric.reset()
        if self.trainer.sanity_checking:
            return
        skipped = scores.skipped(self.tag_names)
        if skipped and skipped != self._reported_skips.get(stage):
            log.warning(
                "%s: %d tag(s) have no positive or no negative clip and are left out of the "
                "macro AUC: %s",
                stage, len(skipped), ", ".join(skipped),
            )  # fmt: skip
            self._reported_skips[stage] = skipped
        self.log_dict(
            {f"{stage}/auc": scores.macro_roc_auc, f"{stage}/pr_auc": scores.macro_pr_auc},
            prog_bar=stage == "val",
            sync_dist=True,  # equal on every process already (the metric gathers all scores)
        )
        if per_tag:
            self.log_dict(
                {
                    f"{stage}_tag_{figure}/{name}": value
                    for figure, values in (("auc", scores.roc_auc), ("pr_auc", scores.pr_auc))
                    for name, value, ok in zip(
                        self.tag_names, values.tolist(), scores.valid.tolist(), strict=True
                    )
                    if ok
                },
                sync_dist=True,
            )

    def on_train_epoch_start(self) -> None:
        # a fresh epoch (not one resumed mid-way) starts without scores from a checkpoint
        self.train_scores.reset()

    def on_train_epoch_end(self) -> None:
        self._stop_if_diverged()
        self._log_epoch_scores("train")

    def on_validation_epoch_start(self) -> None:
        # a pass starts afresh: a checkpoint saved mid-pass (SLURM's requeue save can be)
        # holds that pass's scores, which a resumed run must not count twice
        self.val_scores.reset()

    def on_test_epoch_start(self) -> None:
        self.test_scores.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_scores("val", per_tag=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_scores("test", per_tag=True)

    def configure_optimizers(self) -> dict[str, Any]:
        # the frozen part's parameters are left out: no update, no weight decay, no state
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store every RNG state, so a resumed run draws what the uninterrupted one would;
        refuse to save the weights of a run whose training loss went NaN or infinite."""
        self._stop_if_diverged()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_rng_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the RNG states when a Trainer resumes the run (not for ``load_trained``)."""
        states = checkpoint.get("rng_states")
        if states is None or self._trainer is None:
            return
        torch.set_rng_state(states["torch"])
        kind, keys, *rest = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
        random.setstate(states["python"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])


def freeze_part(net: nn.Module, part: str) -> list[tuple[str, nn.Module]]:
    """Freeze ``part`` of ``net`` (``tagger.models.parts.FREEZE``): no parameter there
    requires a gradient (for ``all_but_output``, every parameter outside the output layer).
    Returns the frozen submodules, which ``TaggingModule.train`` keeps in eval mode."""
    modules = frozen_modules(net, part)
    if part == "all_but_output":
        head = output_layer_name(net)
        frozen = [p for name, p in net.named_parameters() if not name.startswith(f"{head}.")]
    else:
        frozen = [p for _, module in modules for p in module.parameters()]
    for parameter in frozen:
        parameter.requires_grad_(False)
    return modules


def build_module(cfg: DictConfig, tag_names: list[str]) -> TaggingModule:
    """The ``TaggingModule`` of a composed ``train.py`` config, for ``tag_names``.

    With ``compile=true`` the network's forward is compiled by ``torch.compile``
    (``nn.Module.compile``: the state dict, and so checkpoints, stay as they are).
    """
    module: TaggingModule = instantiate(
        cfg.model,
        optimizer=cfg.optimizer,
        scheduler=cfg.get("scheduler"),
        tag_names=tag_names,
        _recursive_=False,
    )
    if cfg.get("compile"):
        module.net.compile()
    return module


def _tensors(value: Any) -> bool:
    """A state-dict value: a tensor, or a list of them (a metric's epoch state)."""
    return isinstance(value, Tensor) or (
        isinstance(value, list) and all(isinstance(v, Tensor) for v in value)
    )


def read_trained(
    path: str | Path, trusted_modules: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A checkpoint of tagger's ``train.py`` read once, weights-only, and through every gate
    of ``load_trained`` short of building its model: (the checkpoint, its checked
    hyperparameters, its run config). ``ConfigError`` naming the file otherwise."""
    checkpoint = read_checkpoint(path)
    source = f"checkpoint {path}"
    if not checkpoint.get("hyper_parameters") or not isinstance(checkpoint.get("config"), dict):
        raise ConfigError(
            f"{path} is not a checkpoint written by tagger's train.py "
            "(it has no model hyperparameters or run config)"
        )
    hparams = check_hyperparameters(checkpoint["hyper_parameters"], source, trusted_modules)
    config = checkpoint["config"]
    check_stored_config(config, source, trusted_modules)
    check_stored_data(config["data"], source)
    check_stored_settings(config, hparams, source)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(map(_tensors, state.values())):
        raise ConfigError(f"{source} has no state_dict of tensors")
    return checkpoint, hparams, config


def load_trained(
    path: str | Path, trusted_modules: Sequence[str] = ()
) -> tuple[TaggingModule, dict[str, Any]]:
    """The trained module (eval mode, on the CPU) and the run config stored in a checkpoint of
    tagger's ``train.py``, loaded weights-only and read once.

    The stored configs pass the gate of ``tagger.targets`` before anything is built: only
    tagger's own networks and ``torch.optim``, or classes of ``trusted_modules``.
    Raises ``ConfigError`` naming the file when it cannot be read, was not written by
    tagger's ``train.py``, names code tagger will not run, or its weights do not fit.
    The checkpoint's decision thresholds, if it has them, are checked and kept as
    ``model.thresholds`` (``tagger.decisions.stored_thresholds``).
    """
    checkpoint, hparams, config = read_trained(path, trusted_modules)
    source, state = f"checkpoint {path}", checkpoint["state_dict"]
    try:
        model = TaggingModule(**hparams)
    except (TypeError, ValueError) as error:  # arguments the network does not take
        raise ConfigError(f"{source}: its model cannot be built: {error}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        reason = str(error).splitlines()[0]
        raise ConfigError(f"{source}: its weights do not fit its model: {reason}") from None
    model.thresholds = stored_thresholds(checkpoint.get(CHECKPOINT_KEY), model.tag_names, source)
    return model.eval(), config


def _shape(tensor: Tensor) -> str:
    return "[" + ", ".join(map(str, tensor.shape)) + "]"


def _tag_change(stored: Sequence[str], new: Sequence[str]) -> str:
    """How the checkpoint's tags and this run's differ, in words."""
    gone = [t for t in stored if t not in set(new)]
    added = [t for t in new if t not in set(stored)]

    def some(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    parts = [f"the checkpoint has {len(stored)} tags, this data {len(new)}"]
    if gone:
        parts.append(f"only in the checkpoint: {some(gone)}")
    if added:
        parts.append(f"only here: {some(added)}")
    return "; ".join(parts)


def init_from_checkpoint(
    model: TaggingModule,
    path: str | Path,
    trusted_modules: Sequence[str] = (),
    sample_rate: int | None = None,
) -> dict[str, Any]:
    """Start ``model`` (a new run's, built for its own data) from the weights of a trained
    checkpoint (``init_from``): fine-tuning, not a resume (the optimizer, epoch and step
    start afresh). The checkpoint passes every gate of ``load_trained`` (``read_trained``);
    its network must be of the same class as ``model``'s.

    Every weight of the network (parameters and buffers) whose name and shape match is
    copied. The output layer (``net.classifier[-1]``) is copied only for the same tags:
    the same names in the same order, or in another order (its rows are reordered to this
    run's); for any other tag set it keeps ``model``'s fresh initialisation.
    Returns what was done, for the log and ``metrics.json``: ``checkpoint``, ``network``,
    ``tags`` (same, reordered or different), ``loaded`` (names in the network),
    ``not_loaded`` (name: reason) and ``unused`` (the checkpoint's weights nothing took).
    ``ConfigError`` naming ``init_from`` when nothing of the network but its output layer
    would load: another class of network, other layer sizes everywhere.
    """
    source = f"init_from={path}"
    if not Path(path).is_file():
        raise ConfigError(f"{source}: no such file (init_from takes a checkpoint written by "
                          "train.py, such as a run's checkpoints/last.ckpt)")  # fmt: skip
    try:
        checkpoint, hparams, config = read_trained(path, trusted_modules)
    except ConfigError as error:  # it names the file; say which setting gave it
        raise type(error)(f"init_from: {error}") from None
    theirs, ours = hparams["net"]["_target_"], model.hparams.net["_target_"]
    if theirs != ours:
        raise ConfigError(
            f"{source}: its network is {theirs}, this run's {ours}; fine-tuning starts "
            "from the same network: choose the checkpoint's model (its config.yaml's model)"
        )
    stored = {name.removeprefix("net."): value
              for name, value in checkpoint["state_dict"].items()
              if name.startswith("net.")}  # fmt: skip
    own = model.net.state_dict()
    stored_tags, tags = list(hparams["tag_names"]), list(model.tag_names)
    same_tags = stored_tags == tags
    reordered = not same_tags and sorted(stored_tags) == sorted(tags)
    try:
        head: str | None = output_layer_name(model.net)
    except ConfigError:  # a network of the user's without net.classifier[-1]
        if not same_tags:
            raise
        head = None
    order = torch.tensor([stored_tags.index(t) for t in tags]) if reordered else None

    loaded: list[str] = []
    not_loaded: dict[str, str] = {}
    values: dict[str, Tensor] = {}
    for name, mine in own.items():
        in_head = head is not None and name.startswith(f"{head}.")
        if in_head and not (same_tags or reordered):
            not_loaded[name] = (f"output layer re-initialised: the tag set differs "
                                f"({_tag_change(stored_tags, tags)})")  # fmt: skip
            continue
        if name not in stored:
            not_loaded[name] = "not in the checkpoint"
            continue
        value = stored[name]
        if in_head and order is not None and value.shape[:1] == (len(stored_tags),):
            value = value[order]  # its rows in this run's tag order
        if value.shape != mine.shape:
            not_loaded[name] = (f"shape {_shape(mine)} here, {_shape(value)} in the "
                                "checkpoint")  # fmt: skip
            continue
        values[name] = value
        loaded.append(name)
    for name, reason in list(not_loaded.items()):  # a layer loads whole or not at all
        layer = name.rpartition(".")[0]
        for other in [n for n in loaded if n.rpartition(".")[0] == layer]:
            loaded.remove(other)
            not_loaded[other] = f"the rest of its layer does not load ({name}: {reason})"
            del values[other]
    not_loaded = {name: not_loaded[name] for name in own if name in not_loaded}
    parameters = dict(model.net.named_parameters())
    body = [name for name in loaded  # a parameter outside the output layer
            if name in parameters and (head is None or not name.startswith(f"{head}."))]
    if not body:
        first = next(iter(not_loaded.items()), ("", "no weights"))
        raise ConfigError(
            f"{source}: none of its network's weights fit this model's (e.g. "
            f"{first[0]}: {first[1]}); nothing would be loaded: fine-tune with the "
            "checkpoint's model settings and window length (data.subclip_len)"
        )
    with torch.no_grad():
        for name, value in values.items():
            own[name].copy_(value)
    report: dict[str, Any] = {
        "checkpoint": str(path),
        "network": ours,
        "tags": "same" if same_tags else "reordered" if reordered else "different",
        "loaded": loaded,
        "not_loaded": not_loaded,
        "unused": sorted(set(stored) - set(own) | {n for n in not_loaded if n in stored}),
    }
    stored_rate = config["data"]["sample_rate"]
    if sample_rate is not None and sample_rate != stored_rate:
        report["warning"] = (f"the checkpoint was trained on audio at {stored_rate} Hz, this "
                             f"data is at {sample_rate} Hz: its filters will see other "
                             "frequencies")  # fmt: skip
    return report
