"""The errors meant for the user: what they gave (a photo, an option, a plan, a folder) cannot be used as it is.

Every part of diffplugin raises a `DiffPluginError` for those, and the CLI, the chat and batch show its message as
one line. Any other exception is a bug and is reported as one (assistant/error_report.py). The subclasses are also
the builtin exception the code raised before, so `except ValueError` around older calls keeps working.

`CannotHelp` is here too, though it is no error: a plugin's honest answer that it cannot help a photo, which the
executor turns into "kept as it was" with the plugin's reason. No imports here: every layer (plugins/, registry/,
assistant/) uses this module.
"""

from __future__ import annotations


class DiffPluginError(Exception):
    """Base class: the message says, in the user's terms, what is wrong and, where it can, what to do."""


class BadInput(DiffPluginError, ValueError):
    """A value the user gave (a photo, an option, a request, a file's content) cannot be used."""


class MissingFile(DiffPluginError, FileNotFoundError):
    """A file or folder the user named, or one a command needs (a checkpoint, a selector), is not there."""


class FileInTheWay(DiffPluginError, FileExistsError):
    """Something is already where a new file or folder would go, and is not replaced without being asked."""


class CannotHelp(Exception):
    """Raised by a plugin that cannot help this photo. The executor keeps the photo as it was and shows the
    message, which should say why in plain words ("the rain mask would cover 85% of the photo"). This is the
    honest answer where an edit could only make the photo worse; it never fails the run."""
