"""Checkpoints written whole or not at all: a temporary file beside the target, then a rename.

Every checkpoint is read weights-only (``read_checkpoint``): tensors and plain data, never
code. ``AtomicCheckpointIO`` does so for resumed runs too.

Lightning's own writer stages a checkpoint in the system's temporary folder and copies it
over the target, so a full disk can leave a truncated ``last.ckpt`` under its real name.
``AtomicCheckpointIO`` (``conf/trainer/default.yaml``: ``plugins``) writes through tagger's
one writer, ``tagger.run_files.replacing``: ``.NAME.tmp-PID`` in the checkpoint's own
folder, flushed to disk and renamed into place; a failed write removes the temporary and
leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tagger.errors import ConfigError
from tagger.run_files import write_bytes


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file's contents, loaded weights-only: tensors and plain data, no code runs.

    Raises ``ConfigError`` naming the file when it is missing, unreadable (truncated, not a
    PyTorch checkpoint) or holds objects a weights-only load refuses (possibly code).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist (pass ckpt_path=PATH/TO/FILE.ckpt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error):  # a class or function to import and call: code, not data
            raise ConfigError(
                f"checkpoint {path} holds objects other than tensors and plain data; tagger "
                "does not execute code from checkpoints (use one written by tagger's train.py)"
            ) from None
        raise ConfigError(f"checkpoint {path} cannot be read: not a PyTorch checkpoint") from None
    except Exception as error:  # a truncated or damaged file
        reason = (str(error).splitlines() or [type(error).__name__])[0].split(". ")[0]
        raise ConfigError(f"checkpoint {path} cannot be read (damaged?): {reason}") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that replaces a checkpoint file only with a complete one.

    An ``OSError`` while writing (no space left, no permission) becomes an ``OutputError``
    naming the checkpoint and what to do. Checkpoints are read with ``read_checkpoint``.
    """

    def load_checkpoint(
        self, path: _PATH, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """The checkpoint at ``path``, loaded weights-only whatever the caller asks (on CPU)."""
        return read_checkpoint(path)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_bytes(path, buffer.getbuffer(), note="the previous checkpoint is kept")


def store_in_checkpoint(path: str | Path, key: str, value: Any) -> None:
    """Rewrite the checkpoint at ``path`` with ``checkpoint[key] = value`` (plain data: a
    weights-only load must still read it), whole or not at all through the same writer as
    ``AtomicCheckpointIO``: a failed write leaves the previous file (``OutputError``)."""
    checkpoint = read_checkpoint(path)
    checkpoint[key] = value
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)
