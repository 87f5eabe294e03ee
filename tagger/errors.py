"""The errors tagger raises for bad input; the bottom layer, importing nothing of tagger."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot work, with a message that says which setting to change."""


class BadClipError(ConfigError):
    """A clip whose samples cannot be used; the message names the clip."""


def find_config_error(error: BaseException) -> ConfigError | None:
    """The ``ConfigError`` behind ``error``, if any (Hydra's ``instantiate`` wraps exceptions)."""
    while error is not None:
        if isinstance(error, ConfigError):
            return error
        error = error.__cause__ or error.__context__
    return None
