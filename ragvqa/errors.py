"""User-facing errors.

Every error the CLI can show derives from :class:`RagvqaError`. Its message
says what went wrong and where; ``hint`` says what to do about it. The CLI
prints ``error: <message> (<hint>)`` on one line and exits with code 2, never
a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class RagvqaError(Exception):
    """Base class of the errors a user can act on.

    Args:
        message: what went wrong, and where (file, byte offset, line, id).
        hint: what the user should do next; shown after the message.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message (and hint) as one line, as the CLI prints it."""
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return " ".join(text.split())


class InputError(RagvqaError):
    """Bad user input: a missing path, an unreadable image, an empty question."""


class DataError(RagvqaError):
    """A data file is corrupt or malformed (truncated bz2, bad XML, invalid JSON)."""


class KnowledgeBaseError(RagvqaError):
    """A KB directory is missing, half-built, or incompatible with the request."""


class ModelError(RagvqaError):
    """A model or checkpoint cannot be loaded (missing keys, wrong format)."""


class GeneratorError(RagvqaError):
    """The generator backend failed (server down, bad answer, timeout)."""


class MissingDependencyError(RagvqaError):
    """An optional library is not installed; the hint names the extra."""


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency or raise an error naming the extra.

    Args:
        module: the importable module name, e.g. ``"gradio"``.
        extra: the ragvqa extra that installs it, e.g. ``"demo"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # the message says which extra brings it
        raise MissingDependencyError(
            f"the optional dependency {module!r} is not installed ({exc})",
            hint=f"install it with: pip install 'ragvqa[{extra}]'",
        ) from exc
