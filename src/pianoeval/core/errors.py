"""Project exceptions: one line for a person, naming the file and what to do."""

from __future__ import annotations

from pathlib import Path


class PianoevalError(Exception):
    """An expected failure (bad input, bad config) reported to the user on one line."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:
        # Keep message and path apart when the error crosses a process boundary (worker pools).
        return type(self), (self.message, self.path)


class InputError(PianoevalError):
    """A data file (MIDI, audio, labels, manifest) is unreadable or invalid."""


class ConfigError(PianoevalError):
    """The configuration is invalid (unknown key, wrong type, unknown model)."""


class OutputError(PianoevalError):
    """An output could not be written (disk full, read-only folder); nothing partial is left behind."""


class RemoteError(PianoevalError):
    """Copying to or from durable storage failed (rclone missing, remote unknown or unreachable)."""
