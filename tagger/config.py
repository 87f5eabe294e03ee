"""Configuration helpers shared by the command-line entry points."""

from __future__ import annotations

import secrets
from pathlib import Path

from omegaconf import OmegaConf

#: The Hydra config directory at the repository root.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


class ConfigError(ValueError):
    """A configuration that cannot work, with a message that says which setting to change."""


def register_resolvers() -> None:
    """Register the ``${run_id:}`` resolver used in run directory names.

    ``run_id`` is a random 6-hex-digit token, drawn once per process (cached), so two
    runs or sweeps started in the same second never share a directory.
    """
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)
