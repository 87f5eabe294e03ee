"""Where tagger's Hydra configs are: ``CONFIG_DIR``, read by the command line and the library."""

from __future__ import annotations

from pathlib import Path


def _config_dir() -> str:
    """The Hydra configs: ``tagger/conf`` in an installed wheel, else ``conf/`` beside the
    package (a clone, or an editable install of one)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise ImportError(f"tagger's configs are missing: neither {package}/conf nor ../conf exists")


#: The Hydra config directory (``conf/`` of the repository, shipped as ``tagger/conf``).
CONFIG_DIR = _config_dir()
