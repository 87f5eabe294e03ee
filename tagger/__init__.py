"""tagger: music auto-tagging from raw audio with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
