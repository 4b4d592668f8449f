"""Exceptions raised by mmreward. Each message names the offending value and what to do about it."""

from __future__ import annotations


class MMRewardError(Exception):
    """Base class for errors raised by mmreward."""


class MediaError(MMRewardError, ValueError):
    """A media item could not be read or converted (missing, corrupt, unsupported, too large, too short).

    Raised per item; batch APIs catch it and record the message in the item's ``error`` field.
    """


class WeightsNotFoundError(MMRewardError, FileNotFoundError):
    """Model weights are neither a local path nor obtainable from the hub (offline, missing file, typo)."""


class ReferenceNotAvailableError(MMRewardError, FileNotFoundError):
    """A checkpoint's published training prompt is neither cached nor downloadable (offline, unreachable, or a local
    clone without the file)."""


class ReferenceMismatchError(MMRewardError, ValueError):
    """A reference prompt file's bytes differ from the sha256 its template pins (another revision, or edited)."""


class UnknownRewardError(MMRewardError, KeyError):
    """A reward name that is neither registered, a preset file, nor an importable ``module:Class``."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class ConfigError(MMRewardError, ValueError):
    """A configuration value is invalid or inconsistent with another one."""


class FrameSamplingError(MediaError):
    """The requested frames cannot be taken from a video (too few frames, implausible fps, bad arguments).

    Independent of the decoder, so decoders do not fall back to one another on it.
    """


class DataNotAvailableError(ConfigError, FileNotFoundError):
    """A pinned prompt file (``github:...``) is neither cached nor downloadable (offline or unreachable). A
    ConfigError, so the training programs report it in one line."""
