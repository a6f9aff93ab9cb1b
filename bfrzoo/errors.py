"""The exceptions bfrzoo raises for user mistakes. Each message says what to do next."""
from __future__ import annotations


class BfrzooError(Exception):
    """Base class: a problem the user can fix (bad name, bad file, bad value)."""


class UnknownNameError(BfrzooError, KeyError):
    """An unknown restorer, recipe, preset or converter name."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class WeightsNotFoundError(BfrzooError, FileNotFoundError):
    """A weight file is neither given, cached nor downloadable."""


class CheckpointMismatchError(BfrzooError, ValueError):
    """A checkpoint's keys or shapes do not fit the network it is loaded into."""


class ImageInputError(BfrzooError, ValueError):
    """An image that cannot be read or has an unusable size, range or layout."""
