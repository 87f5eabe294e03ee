"""TensorBoard dashboards of a training run, beyond its scalars (``conf/callbacks/dashboards``).

``TensorBoardDashboards`` writes, into the run's TensorBoard events:

* **HParams**: a flat, readable selection of the run's settings (``hparams``: config-group
  choices such as ``model=baseline`` and dotted keys of the run config such as
  ``optimizer.lr``) with ``metrics`` (the final ``val/auc``, ``val/pr_auc``, ``test/auc``,
  ``test/pr_auc``) as the HParams plugin's metrics, so the runs of a sweep are one table in
  TensorBoard's HParams view. The metrics' values are the scalars of those tags that
  ``TaggingModule`` logs: the plugin shows each run's last one.
* **PR curves**: one per tag that can be scored (``<split>_pr_curve/<tag>``), from the last
  validation of the fit (at its end) and from the test pass.
* **Images**: the per-tag ROC-AUC chart (``<split>_figures/per_tag_auc``) and the taggrams of
  the split's first ``taggrams`` clips (``<split>_taggram/<clip id>``), drawn by
  ``tagger.figures``.

It costs nothing per step: it keeps a reference to the epoch's scores that
``TaggingModule`` gathered anyway and works only at the ends of the fit and of the test.
Without a TensorBoard logger (``logger=csv``) it does nothing; under DDP every process
hands its scores to process 0, which alone writes.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import Tensor

from tagger.aggregation import clip_probabilities
from tagger.callbacks import StoreRunConfig
from tagger.errors import ConfigError
from tagger.figures import per_tag_auc_figure, png_bytes, taggram_figure
from tagger.metrics import EpochTagScores, tag_scores

log = logging.getLogger(__name__)

#: The HParams table's columns by default (``conf/callbacks/dashboards.yaml`` says the same).
HPARAMS = (
    "model", "conv.length", "conv.stride", "model.aggregation", "optimizer", "optimizer.lr",
    "optimizer.weight_decay", "scheduler", "data", "data.batch_size", "data.n_subclips",
    "data.subclip_len", "augment", "trainer.max_epochs", "seed", "experiment",
)  # fmt: skip
#: The HParams metrics by default: scalar tags that ``TaggingModule`` logs.
METRICS = ("val/auc", "val/pr_auc", "test/auc", "test/pr_auc")


def hparam_value(name: str, choices: Mapping[str, Any], config: Mapping[str, Any]) -> float | str:
    """One HParams column of a run: the choice of the config group ``name`` when it is one
    (``model`` -> ``baseline``), else the value at the dotted key ``name`` of the run config
    (``optimizer.lr``). A number stays one; anything else is text (``none`` when missing or
    null, ``true``/``false``, lists as written)."""
    if name in choices:
        value = choices[name]
    else:
        value: Any = config
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value
    return "none" if value is None else str(value)


class TensorBoardDashboards(Callback):
    """HParams, PR curves per tag and figures of a run in its TensorBoard events (see the
    module's docstring).

    Args:
        hparams: the HParams columns: config-group names (their choice) or dotted keys of
            the run config (the one ``StoreRunConfig`` saves in checkpoints).
        metrics: scalar tags shown as the HParams metrics.
        choices: the run's config-group choices (``${hydra:runtime.choices}``).
        taggrams: how many clips of each split get a taggram (0: none).
        pr_curve_thresholds: the thresholds of each PR curve.
    """

    def __init__(
        self,
        hparams: Sequence[str] = HPARAMS,
        metrics: Sequence[str] = METRICS,
        choices: Mapping[str, Any] | None = None,
        taggrams: int = 2,
        pr_curve_thresholds: int = 127,
    ) -> None:
        for name, value, low in (("taggrams", taggrams, 0),
                                 ("pr_curve_thresholds", pr_curve_thresholds, 2)):  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 10_000:
                raise ConfigError(
                    f"callbacks.dashboards.{name} must be a whole number from {low} to 10000, "
                    f"not {value!r}"
                )
        self.hparams = [str(name) for name in hparams]
        self.metrics = [str(name) for name in metrics]
        self.choices = dict(choices or {})
        self.taggrams = taggrams
        self.pr_curve_thresholds = pr_curve_thresholds
        self._active = False
        self._session_started = False
        self._scores: dict[str, tuple[list[Tensor], list[Tensor], int]] = {}

    # -- which writer ---------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # the same answer on every process (each has the logger; only process 0 writes)
        self._active = any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers)

    @staticmethod
    def _writer(trainer: Trainer) -> Any:
        """The TensorBoard ``SummaryWriter`` of process 0 (None elsewhere)."""
        if not trainer.is_global_zero:
            return None
        logger = next(lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger))
        return logger.experiment

    # -- HParams ----------------------------------------------------------------------------

    def hparam_values(self, trainer: Trainer) -> dict[str, float | str]:
        """This run's HParams columns (``hparam_value`` of each of ``hparams``)."""
        stored = next((c for c in trainer.callbacks if isinstance(c, StoreRunConfig)), None)
        config = stored.config if stored is not None else {}
        return {name: hparam_value(name, self.choices, config) for name in self.hparams}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active or not trainer.is_global_zero or self._session_started:
            return
        from torch.utils.tensorboard.summary import hparams

        try:
            experiment, start, _ = hparams(self.hparam_values(trainer),
                                           dict.fromkeys(self.metrics, 0.0))  # fmt: skip
            writer = self._writer(trainer)._get_file_writer()
            writer.add_summary(experiment)
            writer.add_summary(start)
        except Exception as error:  # as in _publish: the run goes on without them
            log.warning("TensorBoard dashboards: the hyperparameters were not written (%s: %s)",
                        type(error).__name__, error)  # fmt: skip
            return
        self._session_started = True

    def _end_session(self, trainer: Trainer, status: str) -> None:
        if not self._session_started or not trainer.is_global_zero:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        self._session_started = False
        end = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(status),
                                             end_time_secs=time.time())  # fmt: skip
        content = plugin_data_pb2.HParamsPluginData(
            session_end_info=end, version=metadata.PLUGIN_DATA_VERSION
        )
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString()))  # fmt: skip
        summary = Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG,
                                               metadata=meta)])  # fmt: skip
        try:
            writer = self._writer(trainer)
            writer._get_file_writer().add_summary(summary)
            writer.flush()
        except Exception as error:  # never in the way of the run's own end or error
            log.warning("TensorBoard dashboards: the session's end was not written (%s: %s)",
                        type(error).__name__, error)  # fmt: skip

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._active:
            self._end_session(trainer, "STATUS_SUCCESS")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule,
                     exception: BaseException) -> None:  # fmt: skip
        if self._active:
            self._end_session(trainer, "STATUS_FAILURE")

    # -- the epoch's scores -------------------------------------------------------------------

    def _keep(self, trainer: Trainer, pl_module: LightningModule, split: str) -> None:
        """Keep this process's scores of the epoch (references, before the module's own
        ``on_*_epoch_end`` computes and resets them)."""
        metric = getattr(pl_module, f"{split}_scores", None)
        if self._active and not trainer.sanity_checking and isinstance(metric, EpochTagScores):
            self._scores[split] = (list(metric.scores), list(metric.targets), metric.num_tags)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._keep(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._keep(trainer, pl_module, "test")

    def _gathered(self, trainer: Trainer, split: str) -> tuple[Tensor, Tensor]:
        """The split's scores and 0/1 targets [clips, tags] of every process, on the CPU."""
        scores, targets, num_tags = self._scores.pop(split)
        scores_t = torch.cat(scores) if scores else torch.zeros(0, num_tags)
        targets_t = torch.cat(targets) if targets else torch.zeros(0, num_tags, dtype=torch.int8)
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            from torchmetrics.utilities.distributed import gather_all_tensors

            scores_t = torch.cat(gather_all_tensors(scores_t))
            targets_t = torch.cat(gather_all_tensors(targets_t))
        return scores_t.float().cpu(), targets_t.cpu()

    # -- writing ---------------------------------------------------------------------------

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._active and "val" in self._scores:
            self._publish(trainer, pl_module, "val")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._active and "test" in self._scores:
            self._publish(trainer, pl_module, "test")

    def _publish(self, trainer: Trainer, pl_module: LightningModule, split: str) -> None:
        scores, targets = self._gathered(trainer, split)  # every process takes part
        writer = self._writer(trainer)
        if writer is None or not len(scores):
            return
        try:
            self._write(trainer, pl_module, split, writer, scores, targets)
        except Exception as error:  # a picture is never worth the run: say so and go on
            log.warning("TensorBoard dashboards: the %s curves and figures were not written "
                        "(%s: %s)", split, type(error).__name__, error)  # fmt: skip

    def _write(self, trainer: Trainer, pl_module: LightningModule, split: str, writer: Any,
               scores: Tensor, targets: Tensor) -> None:  # fmt: skip
        """The split's PR curves, per-tag ROC-AUC chart and taggrams (process 0)."""
        step = trainer.global_step
        tag_names = list(getattr(pl_module, "tag_names", None) or
                         [f"tag{k}" for k in range(scores.shape[1])])  # fmt: skip
        scored = tag_scores(scores, targets)
        for k in np.flatnonzero(scored.valid.numpy()):
            writer.add_pr_curve(f"{split}_pr_curve/{tag_names[k]}", targets[:, k].numpy(),
                                scores[:, k].numpy(), step,
                                num_thresholds=self.pr_curve_thresholds)  # fmt: skip
        if scored.valid.any():
            figure = per_tag_auc_figure(tag_names, scored.roc_auc.tolist())
            figure.suptitle(f"{split}: per-tag ROC-AUC (step {step})")
            _add_figure(writer, f"{split}_figures/per_tag_auc", figure, step)
        for clip_id, figure in self._taggrams(trainer, pl_module, split, tag_names):
            _add_figure(writer, f"{split}_taggram/{clip_id}", figure, step)
        writer.flush()

    def _taggrams(self, trainer: Trainer, pl_module: LightningModule, split: str,
                  tag_names: list[str]) -> list[tuple[str, Figure]]:  # fmt: skip
        """Taggrams of the split's first ``taggrams`` clips by the module as it is now (the
        final weights after fitting; those tested at the test's end)."""
        splits = getattr(trainer.datamodule, "splits", None) or {}
        dataset = splits.get(split)
        rate = getattr(trainer.datamodule, "sample_rate", None)
        if not self.taggrams or dataset is None or not rate or not len(dataset):
            return []
        indices = list(range(min(self.taggrams, len(dataset))))
        batch = dataset.batch(indices, dataset.starts(indices))
        starts = np.broadcast_to(dataset.starts(indices), (len(indices), dataset.n_subclips))
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                logits = pl_module(batch["audio"].to(pl_module.device)).float()
        finally:
            pl_module.train(was_training)
        aggregation = pl_module.hparams.get("aggregation", "mean_logits")
        clip = clip_probabilities(logits, aggregation).cpu().numpy()
        windows = torch.sigmoid(logits).cpu().numpy()
        hop_s = dataset.subclip_len / rate
        figures = []
        for row, index in enumerate(indices):
            clip_id = dataset.clip_ids[index]
            figure, _ = taggram_figure(starts[row] / rate, hop_s, windows[row], tag_names,
                                       clip[row], title=f"{split} clip {clip_id}")  # fmt: skip
            figures.append((clip_id, figure))
        return figures


def _add_figure(writer: Any, tag: str, figure: Figure, step: int) -> None:
    """A figure as a TensorBoard image (drawn to PNG as ``tagger.figures`` saves its files;
    no pyplot, so no backend is chosen)."""
    from PIL import Image

    with Image.open(io.BytesIO(png_bytes(figure))) as image:
        pixels = np.asarray(image.convert("RGB"))
    writer.add_image(tag, pixels, step, dataformats="HWC")
