"""The exceptions markco raises on purpose.

Every error a person may see names what was wrong and what to do about it. Plugins raise these
too, so the daemon, the CLI and the API can turn them into a message, an exit code or a JSON error
without knowing which plugin failed.
"""

from __future__ import annotations


class MarkcoError(Exception):
    """Base class of every deliberate markco error."""


class ConfigError(MarkcoError):
    """The configuration is wrong: the message names the file and the key."""


class PluginError(MarkcoError):
    """A plugin broke the contract (async hookimpl, duplicate provider name, unknown hook...)."""


class StorageError(MarkcoError):
    """Storage failed in a way the caller cannot fix by changing its input."""


class NotFound(MarkcoError):
    """The record asked for does not exist (or the caller may not know it exists)."""


class Conflict(MarkcoError):
    """The write would break a uniqueness rule (a username taken, a second live runtime...)."""


class AlreadyRunning(MarkcoError):
    """Another markco daemon already holds the single-instance lock of this data dir/database."""


class BackendError(MarkcoError):
    """A container backend or checkpointer failed; the message says which engine and why."""


class CheckpointError(BackendError):
    """A checkpoint or restore failed; the workload was left as it was."""


class CheckpointUnavailable(CheckpointError):
    """Checkpointing cannot work here (CRIU missing or too old, the kernel refuses, the backend
    is not supported); the message says how to fix it."""


class RestoreIncompatible(CheckpointError):
    """An archive cannot be restored here (CRIU, kernel, image or runtime changed since it was
    made, or it is damaged): fall back to a cold start with the user's files intact."""
