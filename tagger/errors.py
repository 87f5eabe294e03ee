"""The errors tagger raises for bad input; the bottom layer, importing nothing of tagger."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot work, with a message that says which setting to change."""


class BadClipError(ConfigError):
    """A clip whose samples cannot be used; the message names the clip."""
