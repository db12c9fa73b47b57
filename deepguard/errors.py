"""Exceptions with messages meant for users: they name the file and the problem."""

from __future__ import annotations


class DeepGuardError(Exception):
    """Base class: anything the CLI/server may turn into an `error` field instead of a crash."""


class MediaError(DeepGuardError, ValueError):
    """An input file or buffer could not be decoded (empty, corrupt, unsupported, truncated)."""


class ModelError(DeepGuardError):
    """A model file is missing, malformed, or lacks the metadata DeepGuard needs."""
