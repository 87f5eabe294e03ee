"""A trained tagger as a standalone TorchScript or ONNX model.

The exported model maps raw audio windows [batch, n_windows, 1, window_length] (float32
on the int16 scale, as in training: samples in [-1, 1] times ``input_scale``) to tag
probabilities [batch, K], with the clip-level aggregation included; batch and n_windows
are dynamic. What a user needs to feed it (tag names, sample rate, window length, input
scale) is written beside it as ``FILE.json`` and, for TorchScript, also inside it
(``torch.jit.load(FILE, _extra_files={"tagger.json": ""})``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tagger.aggregation import clip_probabilities
from tagger.errors import ConfigError
from tagger.module import TaggingModule, subclip_logits
from tagger.run_files import replacing

Format = Literal["torchscript", "onnx"]
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
    ``fmt`` is onnx and the onnx packages are missing, ``OutputError`` naming a file that
    cannot be written.
    """
    clip_tagger = ClipTagger(model).eval()
    example = example_input(info["window_length"])
    if fmt == "torchscript":
        model_bytes = _torchscript_bytes(clip_tagger, example, info)
    else:
        model_bytes = _onnx_bytes(clip_tagger, example, info)
    sidecar = out.with_name(out.name + ".json")
    with replacing(out, sidecar) as (model_tmp, sidecar_tmp):
        model_tmp.write_bytes(model_bytes)
        sidecar_tmp.write_text(json.dumps(info, indent=2) + "\n")
    return out, sidecar


def _torchscript_bytes(clip_tagger: ClipTagger, example: Tensor, info: dict[str, Any]) -> bytes:
    """The traced model as a TorchScript file's bytes, ``info`` inside as ``EXTRA_FILE``."""
    with torch.no_grad():
        traced = torch.jit.trace(clip_tagger, example)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: json.dumps(info)})
    return buffer.getvalue()


def _onnx_bytes(clip_tagger: ClipTagger, example: Tensor, info: dict[str, Any]) -> bytes:
    """An ONNX file's bytes, with dynamic batch and n_windows axes; ``info`` also in its
    metadata_props. Exported in memory: torch.onnx writes no file of its own."""
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "--format onnx needs the onnx, onnxruntime and onnxscript packages: "
            "pip install 'tagger[export]'"
        ) from None
    batch, n_windows = torch.export.Dim("batch"), torch.export.Dim("n_windows")
    program = torch.onnx.export(
        clip_tagger,
        (example,),
        input_names=["audio"],
        output_names=["probabilities"],
        dynamic_shapes={"audio": {0: batch, 1: n_windows}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {EXTRA_FILE: json.dumps(info)})
    return proto.SerializeToString()
