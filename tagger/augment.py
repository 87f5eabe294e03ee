"""Augmentation of training batches (``augment=``): ``Augment``, a Lightning callback.

``Augment.on_train_batch_start`` gets each training batch after Lightning has moved it to
the device, the same dict that ``training_step`` then gets, and replaces its ``audio``
(float32 on the scale it came in, so int16 batches of ``data.on_device`` become float32
on the int16 scale, which the model's ``subclip_logits`` divides by ``input_scale`` as
usual) and, with mixup, its ``labels``. Validation, test, predict and eval batches never
pass through it. It runs outside autocast, so ``trainer.precision=bf16-mixed`` changes
nothing here: the audio is transformed in float32.

Every transform is decided per clip (all windows of a clip get the same draw), with its
own probability ``p``, in this order, with the :mod:`tagger.perturb` operations:

1. ``gain`` (uniform in ``db``) and ``polarity`` (the sign flipped): one multiply, in the
   pass that converts the batch to float32.
2. ``mixup`` (Zhang et al., 2018, "mixup: Beyond Empirical Risk Minimization"): the clip
   becomes ``lam * clip + (1 - lam) * other`` for another clip of the batch (a random
   permutation; the other clip as step 1 left it), ``lam ~ Beta(alpha, alpha)`` folded
   to ``lam >= 0.5``; the labels are mixed with the same weights,
   ``lam * y + (1 - lam) * y_other`` (soft targets for the binary cross-entropy, as in the
   mixup paper and in PANNs' audio tagging). Since ``lam >= 0.5``, rounding a mixed label
   gives the dominant clip's tag, which is what the train ROC-AUC (``EpochTagScores``,
   0/1 targets) is scored against.
3. ``filter``: a low-, high- or band-pass (``kinds``, one drawn per clip), zero-phase
   Butterworth magnitude of order 4; cutoffs log-uniform in ``lowpass_hz`` (the low-pass
   edge) and ``highpass_hz`` (the high-pass edge); a band-pass uses both.
4. ``pitch``: a shift by one of ``semitones`` (drawn per clip), each window on its own.
   ``method: speed`` (the default) plays the window 2 ** (semitones / 12) times faster
   by linear interpolation (``perturb.speed``): pitch and tempo change together, as with
   a tape, and the window keeps its length (read backwards from its end where a faster
   window runs out). ``method: vocoder`` keeps the tempo (``perturb.pitch_shift``: phase
   vocoder, then resampling), at about 50 times the cost: on CPU one clip of ten
   windows takes longer than a whole training step of ``baseline``.
5. ``noise``: white Gaussian noise at an SNR uniform in ``snr_db``, relative to each
   window's own power. To keep it cheap on a CPU, the windows cut their noise at random
   offsets from one Gaussian sequence drawn per batch (window length + 8,192 samples):
   each window's noise is white and Gaussian, and windows share shifted stretches of it.

Only the clips drawn for a transform go through it, one clip at a time on a view of the
batch (no gathered copies), so its cost is proportional to its ``p``. On a CPU the
filter (an FFT of each window) is the dearest, then the pitch shift; ``augment=standard``
gives both low probabilities (``benchmarks/README.md``).

Repeatable without saved state: the draws of a batch come from a generator seeded with
(``seed``, global step, the batch's place in gradient accumulation, process rank), so the
same seed gives the same augmented batches, a resumed run continues with the draws the
uninterrupted one would have made, and DDP processes draw differently. Parameters are
drawn on the host (numpy, no device sync); the noise samples on the device, from a
``torch.Generator`` seeded from the same draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from lightning import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from tagger import perturb
from tagger.config import CONFIG_DIR
from tagger.errors import ConfigError
from tagger.settings import check_settings

FILTER_KINDS = ("lowpass", "highpass", "bandpass")
PITCH_METHODS = ("speed", "vocoder")
#: noise: the offsets, in samples, at which windows cut their noise from a batch's sequence
NOISE_SPREAD = 8192
#: the transforms, in the order a batch goes through them (``Augment``'s arguments)
TRANSFORMS = ("gain", "polarity", "mixup", "filter", "pitch", "noise")


def _defaults() -> dict[str, dict[str, Any]]:
    """Each transform's settings and their values where a config leaves them out: those of
    ``conf/augment/none.yaml``, which says them once (every ``p`` 0; the presets start from it)."""
    none = OmegaConf.load(Path(CONFIG_DIR) / "augment" / "none.yaml")
    return {name: OmegaConf.to_container(none[name]) for name in TRANSFORMS}


#: each transform's settings and their defaults, read from ``conf/augment/none.yaml``
DEFAULTS: dict[str, dict[str, Any]] = _defaults()


def _range(name: str, value: Any) -> tuple[float, float]:
    """A [low, high] setting (each number checked by ``tagger.settings``) as two floats,
    refused in one line unless it is two numbers with low <= high."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"augment.{name} must be a range [low, high], not {value!r}") from None
    if not low <= high:
        raise ConfigError(f"augment.{name} must be finite with low <= high, not {value!r}")
    return low, high


def _settings(name: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """One transform's settings: ``DEFAULTS[name]`` updated by ``given``, unknown keys
    refused (the values are checked by ``tagger.settings``)."""
    settings = dict(DEFAULTS[name])
    unknown = sorted(set(given or {}) - set(settings))
    if unknown:
        raise ConfigError(
            f"augment.{name} has no setting {', '.join(unknown)}; it has {', '.join(settings)}"
        )
    settings.update(given or {})
    return settings


@dataclass(frozen=True)
class Draws:
    """One batch's random choices, per clip ([B] arrays; a transform's mask says who gets it)."""

    mix: np.ndarray
    partner: np.ndarray
    lam: np.ndarray
    filtered: np.ndarray
    low_hz: np.ndarray
    high_hz: np.ndarray
    shifted: np.ndarray
    semitones: np.ndarray
    factor: np.ndarray
    noisy: np.ndarray
    snr_db: np.ndarray
    noise_seed: int

    @property
    def none_drawn(self) -> bool:
        """Whether no clip gets any transform (the batch stays as it is)."""
        scaled = (self.factor != 1).any()
        return not (scaled or self.mix.any() or self.filtered.any() or self.shifted.any()
                    or self.noisy.any())  # fmt: skip


class Augment(Callback):
    """Random perturbations of each training batch on the device (see the module docstring).

    Args:
        sample_rate: Hz of the audio (the filters' cutoffs are in Hz).
        seed: the run's seed (None: 0); draws depend on (seed, step, accumulation index,
            rank).
        gain, polarity, mixup, filter, pitch, noise: each transform's ``p`` and range,
            keys as in ``DEFAULTS`` (missing keys take those of
            ``conf/augment/none.yaml``).
    """

    def __init__(
        self,
        sample_rate: float,
        seed: int | None = 0,
        gain: Mapping[str, Any] | None = None,
        polarity: Mapping[str, Any] | None = None,
        mixup: Mapping[str, Any] | None = None,
        filter: Mapping[str, Any] | None = None,
        pitch: Mapping[str, Any] | None = None,
        noise: Mapping[str, Any] | None = None,
    ) -> None:
        self.sample_rate = float(sample_rate)
        self.seed = 0 if seed is None else int(seed) % 2**63
        self.gain = _settings("gain", gain)
        self.polarity = _settings("polarity", polarity)
        self.mixup = _settings("mixup", mixup)
        self.filter = _settings("filter", filter)
        self.pitch = _settings("pitch", pitch)
        self.noise = _settings("noise", noise)
        transforms = {"gain": self.gain, "polarity": self.polarity, "mixup": self.mixup,
                      "filter": self.filter, "pitch": self.pitch, "noise": self.noise}  # fmt: skip
        check_settings(transforms, prefix="augment.")  # each value's range
        self.kinds = [str(kind) for kind in self.filter["kinds"]]
        if not self.kinds or not set(self.kinds) <= set(FILTER_KINDS):
            raise ConfigError(
                f"augment.filter.kinds must be some of {', '.join(FILTER_KINDS)}, "
                f"not {self.kinds}"
            )
        self.lowpass_hz = _range("filter.lowpass_hz", self.filter["lowpass_hz"])
        self.highpass_hz = _range("filter.highpass_hz", self.filter["highpass_hz"])
        nyquist = self.sample_rate / 2
        if self.filter["p"] and max(self.lowpass_hz[1], self.highpass_hz[1]) >= nyquist:
            raise ConfigError(
                f"augment.filter cutoffs must stay below {nyquist:g} Hz (half of "
                f"data.sample_rate={self.sample_rate:g}); lower augment.filter.lowpass_hz and "
                "augment.filter.highpass_hz, or set augment.filter.p=0"
            )
        self.semitones = np.asarray([float(s) for s in self.pitch["semitones"]])
        if self.semitones.size == 0:
            raise ConfigError(
                f"augment.pitch.semitones must be a non-empty list of numbers, "
                f"not {self.pitch['semitones']}"
            )
        if self.pitch["method"] not in PITCH_METHODS:
            raise ConfigError(
                f"augment.pitch.method must be one of {', '.join(PITCH_METHODS)}, "
                f"not {self.pitch['method']!r}"
            )
        self.db = _range("gain.db", self.gain["db"])
        self.snr_db = _range("noise.snr_db", self.noise["snr_db"])
        self._buffer: Tensor | None = None  # the augmented audio, reused from batch to batch

    @property
    def active(self) -> bool:
        """Whether any transform has a probability above 0."""
        settings = (self.mixup, self.filter, self.pitch, self.gain, self.polarity, self.noise)
        return any(float(s["p"]) > 0 for s in settings)

    def rng(self, step: int, micro_batch: int = 0, rank: int = 0) -> np.random.Generator:
        """The generator of one batch: training step, index in gradient accumulation, rank."""
        return np.random.default_rng([self.seed, step, micro_batch, rank])

    def draw(self, n_clips: int, rng: np.random.Generator) -> Draws:
        """Every random choice for a batch of ``n_clips`` clips, in a fixed order."""

        def chosen(settings: Mapping[str, Any]) -> np.ndarray:
            return rng.random(n_clips) < float(settings["p"])

        def log_uniform(bounds: tuple[float, float]) -> np.ndarray:
            low, high = np.log(bounds)
            return np.exp(rng.uniform(low, high, n_clips))

        mix, partner = chosen(self.mixup), rng.permutation(n_clips)
        alpha = float(self.mixup["alpha"])
        lam = rng.beta(alpha, alpha, n_clips)
        lam = np.where(mix, np.maximum(lam, 1 - lam), 1.0)
        filtered, kind = chosen(self.filter), rng.integers(len(self.kinds), size=n_clips)
        kinds = np.asarray(self.kinds)[kind]
        lowpass, highpass = log_uniform(self.lowpass_hz), log_uniform(self.highpass_hz)
        high_hz = np.where(kinds == "highpass", np.inf, lowpass)
        low_hz = np.where(kinds == "lowpass", 0.0, highpass)
        shifted, semitones = chosen(self.pitch), rng.choice(self.semitones, n_clips)
        gained, db = chosen(self.gain), rng.uniform(*self.db, n_clips)
        flipped = chosen(self.polarity)
        factor = np.where(gained, 10.0 ** (db / 20), 1.0) * np.where(flipped, -1.0, 1.0)
        noisy, snr_db = chosen(self.noise), rng.uniform(*self.snr_db, n_clips)
        return Draws(
            mix, partner, lam, filtered, low_hz, high_hz, shifted & (semitones != 0),
            semitones, factor, noisy, snr_db, int(rng.integers(2**63)),
        )  # fmt: skip

    def apply(self, audio: Tensor, labels: Tensor, draws: Draws,
              out: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Audio [B, ...windows, T] (float or int16) and labels [B, K] -> the augmented pair:
        float32 audio on the same scale (written into ``out``, float32 of audio's shape, if
        given; else a new tensor) and labels (mixed with mixup); the inputs themselves are
        returned when no transform was drawn for any clip."""
        if draws.none_drawn:
            return audio, labels
        device = audio.device
        per_clip = (-1,) + (1,) * (audio.dim() - 1)

        def on_device(values: np.ndarray) -> Tensor:
            return torch.as_tensor(values, dtype=torch.float32).to(device, non_blocking=True)

        def rows(mask: np.ndarray) -> Tensor:
            return torch.as_tensor(np.flatnonzero(mask)).to(device, non_blocking=True)

        # gain, polarity and mixup's own weight in the pass that makes the float32 copy
        # (transformed in place below); then the mixed-in clips, gained as they were
        weight = draws.factor * draws.lam
        x = torch.empty(audio.shape, dtype=torch.float32, device=device) if out is None else out
        x.copy_(audio)  # then an in-place multiply: twice as fast as int16 * float32 on a CPU
        if (weight != 1).any():
            x.mul_(on_device(weight).view(per_clip))
        if draws.mix.any():
            idx, partner = rows(draws.mix), draws.partner[draws.mix]
            other = draws.factor[partner] * (1 - draws.lam[draws.mix])
            for row, source, w in zip(np.flatnonzero(draws.mix), partner, other, strict=True):
                x[row].add_(audio[source], alpha=float(w))
            partner_rows = torch.as_tensor(partner).to(device, non_blocking=True)
            lam = on_device(draws.lam[draws.mix])[:, None]
            labels = labels.index_copy(
                0, idx, torch.lerp(labels[partner_rows], labels[idx], lam)
            )
        # one clip at a time, on views of x: no gathered copies of the clips
        for row in np.flatnonzero(draws.filtered):
            low, high = float(draws.low_hz[row]), float(draws.high_hz[row])
            x[row].copy_(perturb.bandpass(x[row], low, high, self.sample_rate))
        for row in np.flatnonzero(draws.shifted):
            semitones = float(draws.semitones[row])
            if self.pitch["method"] == "speed":
                x[row].copy_(perturb.speed(x[row], 2.0 ** (semitones / 12)))
            else:
                x[row].copy_(perturb.pitch_shift(x[row], semitones))
        if draws.noisy.any():
            _add_banked_noise(x, draws)
        return x, labels

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule,
                             batch: dict[str, Tensor], batch_idx: int) -> None:  # fmt: skip
        """Replace the batch's audio (and labels) with their augmented versions, in place.

        The new audio is a float32 buffer that the next batch of the same shape reuses
        (a fresh 14 MB tensor per MTAT-sized batch costs more than the multiply that fills
        it): clone it to keep it past the step.
        """
        micro_batch = batch_idx % trainer.accumulate_grad_batches
        rng = self.rng(trainer.global_step, micro_batch, trainer.global_rank)
        audio = batch["audio"]
        draws = self.draw(len(batch["labels"]), rng)
        if self._buffer is None or self._buffer.shape != audio.shape \
                or self._buffer.device != audio.device:  # fmt: skip
            self._buffer = torch.empty(audio.shape, dtype=torch.float32, device=audio.device)
        batch["audio"], batch["labels"] = self.apply(audio, batch["labels"], draws, self._buffer)


def _add_banked_noise(x: Tensor, draws: Draws, spread: int = NOISE_SPREAD) -> None:
    """Add white Gaussian noise to the noisy clips of x [B, ...windows, T], in place, each
    window ``draws.snr_db`` of its clip below its own power. Each window's noise is cut,
    at its own random offset, from one Gaussian sequence of T + spread samples (a sample
    drawn for every audio sample would cost a third of a baseline training step on a CPU).
    """
    n = x.shape[-1]
    generator = torch.Generator(device=x.device).manual_seed(draws.noise_seed)
    bank = torch.randn(n + spread, generator=generator, device=x.device)
    rng = np.random.default_rng(draws.noise_seed)
    for row in np.flatnonzero(draws.noisy):
        windows = x[row].view(-1, n)  # [windows, T], a view of the clip
        rms = torch.linalg.vector_norm(windows, dim=-1, keepdim=True) / math.sqrt(n)
        scales = rms / 10.0 ** (float(draws.snr_db[row]) / 20.0)  # [windows, 1]
        for window, offset, scale in zip(windows, rng.integers(spread + 1, size=len(windows)),
                                         scales, strict=True):  # fmt: skip
            window.addcmul_(bank[offset : offset + n], scale)


def augment_callbacks(cfg: DictConfig) -> list[Callback]:
    """The run's augmentation (``cfg.augment``, ``conf/augment/``) as a list of callbacks:
    ``[Augment]``, or none when the config has no augmentation or all its ``p`` are 0."""
    node = cfg.get("augment")
    if not node:
        return []
    augment = instantiate(node, _convert_="all")
    return [augment] if augment.active else []

