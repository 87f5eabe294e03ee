"""A trained tagger as a standalone model: a ``torch.export`` program (``pt2``), ONNX, a bundle
(``tagger.bundle``: ONNX plus ``tagger.json`` and a model card, run without torch), or
TorchScript (deprecated, as ``torch.jit`` is in torch 2.10+: kept for as long as torch ships it).

The exported model (pt2, onnx, torchscript) maps raw audio windows [batch, n_windows, 1,
window_length] (float32 on the int16 scale, as in training: samples in [-1, 1] times
``input_scale``) to tag probabilities [batch, K], with the clip-level aggregation
included; batch and n_windows are dynamic. What a user needs to feed it (tag names, sample
rate, window length, input scale) is written beside it as ``FILE.json`` and also inside
it: in a pt2 file
(``torch.export.load(FILE, extra_files={"tagger.json": ""})``), in the ONNX model's
metadata_props, in a TorchScript file (``torch.jit.load(FILE, _extra_files=...)``).
A bundle's model gives each window's logits instead, and its reader aggregates them
(``tagger.bundle``).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

import tagger
from tagger import bundle
from tagger.aggregation import clip_probabilities
from tagger.errors import ConfigError
from tagger.module import TaggingModule, subclip_logits
from tagger.run_files import replacing

Format = Literal["pt2", "onnx", "torchscript"]
#: The formats of ``tagger export --format``: one file each, or a bundle (a folder).
FORMATS = ("pt2", "onnx", "bundle", "torchscript")
#: What ``tagger export --format torchscript`` says on stderr, in one line.
TORCHSCRIPT_NOTE = (
    "--format torchscript is deprecated (torch deprecates torch.jit) and stays for as long as "
    "torch ships it; use --format pt2 (torch.export) or onnx"
)
#: The name of the metadata inside a TorchScript file.
EXTRA_FILE = "tagger.json"


class ClipTagger(nn.Module):
    """A tagging network plus its input scaling and aggregation: [B, n, 1, T] -> [B, K]."""

    def __init__(self, model: TaggingModule) -> None:
        super().__init__()
        self.net = model.net
        self.input_scale = float(model.hparams.input_scale)
        self.aggregation = model.hparams.aggregation

    def forward(self, audio: Tensor) -> Tensor:
        logits = subclip_logits(self.net, audio, self.input_scale)  # [B, n, K]
        return clip_probabilities(logits, self.aggregation)


class WindowLogits(nn.Module):
    """A tagging network plus its input scaling: [B, n, 1, T] -> each window's logits
    [B, n, K] (a bundle's model: its reader aggregates them)."""

    def __init__(self, model: TaggingModule) -> None:
        super().__init__()
        self.net = model.net
        self.input_scale = float(model.hparams.input_scale)

    def forward(self, audio: Tensor) -> Tensor:
        return subclip_logits(self.net, audio, self.input_scale)


def metadata(model: TaggingModule, run_config: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """What a user of the exported model needs to know to feed it and read its output."""
    window = int(run_config["data"]["subclip_len"])
    return {
        "input": f"float32 [batch, n_windows, 1, {window}]: mono audio at the sample rate, "
        "in consecutive windows, on the int16 scale (samples in [-1, 1] times input_scale)",
        "output": f"float32 [batch, {len(model.tag_names)}]: tag probabilities, in tag_names order",
        "tag_names": model.tag_names,
        "sample_rate": int(run_config["data"]["sample_rate"]),
        "window_length": window,
        "input_scale": float(model.hparams.input_scale),
        "aggregation": model.hparams.aggregation,
        "checkpoint": str(checkpoint.resolve()),
    }


def example_input(window: int) -> Tensor:
    """A tracing input: 2 clips of 3 windows [2, 3, 1, window] of int16-scale noise."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 1, window, generator=generator) * 3000.0


def export(model: TaggingModule, info: dict[str, Any], fmt: Format, out: Path) -> tuple[Path, Path]:
    """Write the standalone model to ``out`` and ``info`` to ``out`` + ``.json``.

    The model is built in memory and both files go through tagger's one writer
    (``tagger.run_files.replacing``): written beside their targets, flushed, then renamed,
    so an interrupted or failed export (a full disk) leaves neither a partial file nor a
    temporary, and the files there before stay as they were. Raises ``ConfigError`` when
    ``fmt`` is onnx and the onnx packages are missing, or torch has no ``torch.jit`` for
    torchscript; ``OutputError`` naming a file that cannot be written.
    """
    clip_tagger = ClipTagger(model).eval()
    example = example_input(info["window_length"])
    if fmt == "torchscript":
        model_bytes = _torchscript_bytes(clip_tagger, example, info)
    elif fmt == "pt2":
        model_bytes = _pt2_bytes(clip_tagger, example, info)
    else:
        model_bytes = _onnx_bytes(clip_tagger, example, info, "probabilities")
    sidecar = out.with_name(out.name + ".json")
    with replacing(out, sidecar) as (model_tmp, sidecar_tmp):
        model_tmp.write_bytes(model_bytes)
        sidecar_tmp.write_text(json.dumps(info, indent=2) + "\n")
    return out, sidecar


def _dynamic_shapes() -> dict[str, dict[int, Any]]:
    """The exported programs' dynamic axes: batch and n_windows of ``audio``."""
    return {"audio": {0: torch.export.Dim("batch"), 1: torch.export.Dim("n_windows")}}


def _pt2_bytes(clip_tagger: ClipTagger, example: Tensor, info: dict[str, Any]) -> bytes:
    """A ``torch.export`` program's file (``torch.export.save``) as bytes, dynamic batch and
    n_windows axes, ``info`` inside as ``EXTRA_FILE``; load it with ``torch.export.load``
    and call ``.module()``. Its buffers are saved as copies of their own: a buffer that is part
    of a larger tensor's storage (``torch.hann_window``'s) would be saved with a warning."""
    clip_tagger = copy.deepcopy(clip_tagger)
    for module in clip_tagger.modules():
        for name, buffer in module.named_buffers(recurse=False):
            module._buffers[name] = buffer.clone()
    with torch.no_grad():
        program = torch.export.export(clip_tagger, (example,), dynamic_shapes=_dynamic_shapes())
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={EXTRA_FILE: json.dumps(info)})
    return buffer.getvalue()


def _torchscript_bytes(clip_tagger: ClipTagger, example: Tensor, info: dict[str, Any]) -> bytes:
    """The traced model as a TorchScript file's bytes, ``info`` inside as ``EXTRA_FILE``.
    torch.jit's own deprecation warnings are left out: the command says it in one line
    (``TORCHSCRIPT_NOTE``)."""
    if not hasattr(torch, "jit") or not hasattr(torch.jit, "trace"):
        raise ConfigError("--format torchscript: this torch no longer ships torch.jit; "
                          "use --format pt2 or onnx")  # fmt: skip
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        traced = torch.jit.trace(clip_tagger, example)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: json.dumps(info)})
    return buffer.getvalue()


def _onnx_bytes(module: nn.Module, example: Tensor, info: dict[str, Any], output: str) -> bytes:
    """An ONNX file's bytes, input ``audio`` and the one ``output``, with dynamic batch and
    n_windows axes; ``info`` also in its metadata_props. Exported in memory: torch.onnx
    writes no file of its own."""
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "--format onnx needs the onnx, onnxruntime and onnxscript packages: "
            "pip install 'tagger[export]'"
        ) from None
    program = torch.onnx.export(
        module,
        (example,),
        input_names=["audio"],
        output_names=[output],
        dynamic_shapes=_dynamic_shapes(),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {EXTRA_FILE: json.dumps(info)})
    return proto.SerializeToString()


def bundle_info(model: TaggingModule, run_config: dict[str, Any],
                checkpoint: Path) -> dict[str, Any]:  # fmt: skip
    """A bundle's ``tagger.json`` for a checkpoint loaded by ``load_trained``: ``metadata``'s
    input, plus the thresholds (the checkpoint's, ``model.thresholds``, else 0.5 for every
    tag by the rule ``default``), the hop, the network, the data and split it was trained
    on and its test metrics (from the run's ``metrics.json`` beside the checkpoint, when
    that run tested this checkpoint: ``run_summary``), tagger's version and the
    checkpoint's file name and sha256."""
    tags = list(model.tag_names)
    window = int(run_config["data"]["subclip_len"])
    stored = getattr(model, "thresholds", None)
    thresholds = stored if stored is not None else {
        "rule": "default", "split": None, "values": dict.fromkeys(tags, bundle.DEFAULT_THRESHOLD)
    }  # fmt: skip
    summary = run_summary(checkpoint)
    net_target = str(model.hparams.net.get("_target_", type(model.net).__name__))
    return {
        "format": bundle.FORMAT,
        "format_version": bundle.FORMAT_VERSION,
        "tagger_version": tagger.__version__,
        "input": f"{bundle.MODEL_FILE}: float32 {bundle.INPUT_NAME} [batch, n_windows, 1, "
        f"{window}]: mono audio at sample_rate, windows hop_length samples apart, on the "
        "int16 scale (samples in [-1, 1] times input_scale)",
        "output": f"float32 {bundle.OUTPUT_NAME} [batch, n_windows, {len(tags)}]: each window's "
        "tag logits, in tag_names order; a file's probabilities: the windows' logits "
        "combined by aggregation (mean_logits: sigmoid of their mean; mean_probs: mean of "
        "their sigmoids)",
        "tag_names": tags,
        "thresholds": {"rule": thresholds["rule"], "split": thresholds["split"],
                       "values": {tag: float(thresholds["values"][tag]) for tag in tags}},
        "sample_rate": int(run_config["data"]["sample_rate"]),
        "window_length": window,
        "hop_length": window,
        "aggregation": model.hparams.aggregation,
        "input_scale": float(model.hparams.input_scale),
        "model": {"network": net_target.rpartition(".")[2],
                  "parameters": sum(p.numel() for p in model.net.parameters())},
        "data": _data_of(run_config, summary),
        "test_metrics": _test_metrics(summary, checkpoint, tags),
        "checkpoint": {"file": checkpoint.name,
                       "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()},
    }  # fmt: skip


def run_summary(checkpoint: Path) -> dict[str, Any] | None:
    """The ``metrics.json`` of the run that wrote ``checkpoint`` (in the checkpoint's folder
    or the one above: ``RUN/checkpoints/last.ckpt``), when one of its ``checkpoints`` has
    this file's name; else None."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        try:
            summary = json.loads((folder / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(summary, dict) or not isinstance(summary.get("checkpoints"), dict):
            continue
        names = {Path(p).name for p in summary["checkpoints"].values() if isinstance(p, str)}
        if checkpoint.name in names:
            return summary
    return None


def _data_of(run_config: dict[str, Any], summary: dict[str, Any] | None) -> dict[str, Any]:
    """tagger.json's ``data``: the data set (``describe()`` of its data module, as the run's
    metrics.json records it; else named after the data module's class), its split rule and
    the clips of each split."""
    described = summary.get("dataset") if summary else None
    if not isinstance(described, dict):
        target = str(run_config["data"].get("_target_", "unknown"))
        kind = target.rpartition(".")[2].removesuffix("DataModule").lower() or "unknown"
        described = {"name": kind, "real_music": False if kind == "synthetic" else None}
    clips = {split: summary[f"{split}_clips"] for split in ("train", "val", "test")
             if summary and isinstance(summary.get(f"{split}_clips"), int)}  # fmt: skip
    description, split = described.get("description"), described.get("split")
    real = described.get("real_music")
    return {
        "name": str(described.get("name") or "unknown"),
        "description": description if isinstance(description, str) else None,
        "real_music": real if isinstance(real, bool) else None,
        "split": split if isinstance(split, str) else None,
        "clips": clips or None,
    }


def _figure(value: Any) -> float | None:
    """A metric as a float, None when it is missing, not a number, or NaN."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    return float(value) if ok else None


def _test_metrics(summary: dict[str, Any] | None, checkpoint: Path,
                  tags: list[str]) -> dict[str, Any] | None:  # fmt: skip
    """tagger.json's ``test_metrics``: the run's ``test`` section when it tested this
    checkpoint (it names this file, or "final weights" and this is the run's last one)."""
    test = summary.get("test") if summary else None
    if not isinstance(test, dict):
        return None
    tested, last = test.get("checkpoint"), summary["checkpoints"].get("last")  # type: ignore[index]
    is_last = isinstance(last, str) and Path(last).name == checkpoint.name
    final = tested == "final weights" and is_last
    if not final and (not isinstance(tested, str) or Path(tested).name != checkpoint.name):
        return None
    per_tag = {key: test[key] if isinstance(test.get(key), dict) else {}
               for key in ("per_tag_auc", "per_tag_pr_auc")}  # fmt: skip
    return {
        "split": "test",
        "checkpoint": checkpoint.name,
        "auc": _figure(test.get("auc")),
        "pr_auc": _figure(test.get("pr_auc")),
        **{key: {tag: _figure(values.get(tag)) for tag in tags} for key, values in per_tag.items()},
    }


def check_bundle_out(out: Path) -> None:
    """``ConfigError`` unless ``out`` is a new or empty folder (a bundle is never written
    over files, an earlier bundle's included)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a folder with files in it" if out.is_dir() else "a file"
        raise ConfigError(f"--out {out} is {what}; a bundle is written into a new or empty "
                          "folder: choose another --out or remove it")  # fmt: skip


def export_bundle(model: TaggingModule, info: dict[str, Any], out: Path) -> list[Path]:
    """Write a bundle into the folder ``out`` (made; it must not exist, or be empty):
    ``model.onnx`` (``WindowLogits``), ``MODEL_CARD.md`` and, last, ``tagger.json`` (a folder
    with a tagger.json is whole), each through ``tagger.run_files.replacing``. ``info``
    (``bundle_info``) is checked by the bundle's own schema first. Returns the three paths.

    Raises ``ConfigError`` for an ``out`` that is a file or a folder with files in it, or
    a missing onnx package; ``OutputError`` naming a file that cannot be written."""
    check_bundle_out(out)
    bundle.check_info(info, "the bundle's tagger.json")
    window_logits = WindowLogits(model).eval()
    model_bytes = _onnx_bytes(window_logits, example_input(info["window_length"]), info,
                              bundle.OUTPUT_NAME)  # fmt: skip
    paths = [out / bundle.MODEL_FILE, out / bundle.CARD_FILE, out / bundle.INFO_FILE]
    with replacing(*paths) as (model_tmp, card_tmp, info_tmp):
        model_tmp.write_bytes(model_bytes)
        card_tmp.write_text(bundle.model_card(info))
        info_tmp.write_text(json.dumps(info, indent=2, allow_nan=False) + "\n")
    return paths
