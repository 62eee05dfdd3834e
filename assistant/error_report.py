"""How a failure is shown, the same in the CLI, the chat and batch.

A `DiffPluginError` (plugins/errors.py) is the user's to fix: its message is shown as one line. An `OSError` that
is none is the system's answer about a file (permission denied, disk full, no such file): shown as one line too,
since the user can act on it. Anything else is a bug: a short line says so and where its traceback was written
(`log_file()`); `--debug` or `DIFFPLUGIN_DEBUG=1` prints the traceback as well. The log is opened only when a bug
is reported, never at import.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

from plugins.errors import DiffPluginError

#: The exit status of a command that stopped on a bug: EX_SOFTWARE from sysexits.h (1 is a user error, 2 a usage
#: error as Click reports it, 130 a cancelled command).
INTERNAL_EXIT = 70
USER_EXIT = 1
DEBUG_ENV = "DIFFPLUGIN_DEBUG"
#: The log stays small: one file of at most this size, and the one before it.
LOG_BYTES = 1_000_000

_debug = False
_log_lock = threading.Lock()


def set_debug(on: bool) -> None:
    """The root command's `--debug`: also print the traceback of a bug."""
    global _debug
    _debug = on


def debug_enabled() -> bool:
    return _debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def log_file() -> Path:
    """Where the tracebacks of bugs go: the data folder's logs/diffplugin.log."""
    from assistant.paths import data_dir

    return data_dir() / "logs" / "diffplugin.log"


@dataclass(frozen=True)
class Failure:
    """One failure as the user sees it."""

    message: str  # the error's own message: a bug's first line only, as a user error's may list several problems
    type: str  # the exception's class name
    internal: bool  # a bug, not something the user or the system can be asked to fix
    log: Path | None = None  # where the traceback of a bug was written (None: it could not be)
    details: str | None = None  # the traceback of a bug, for --debug

    @property
    def exit_code(self) -> int:
        return INTERNAL_EXIT if self.internal else USER_EXIT

    def line(self) -> str:
        """What the CLI prints: `error: ...`, or the bug notice."""
        return self.text() if self.internal else f"error: {self.message}"

    def text(self) -> str:
        """The message of a user error; for a bug, the notice saying so and where its details are."""
        if not self.internal:
            return self.message
        where = f"details in {self.log}" if self.log else "its details could not be written to a log file"
        hint = "" if debug_enabled() else "; rerun with --debug to see them"
        return f"internal error (a bug): {self.type}: {self.message}; {where}{hint}"

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"error": self.message, "type": self.type, "internal": self.internal}
        if self.internal:
            data["log"] = str(self.log) if self.log else None
        return data


def describe(err: BaseException, bug: bool | None = None) -> Failure:
    """`err` as the user sees it; a bug's traceback is appended to `log_file()` on the way. `bug` overrides the
    classification by type where the caller knows better (a worker process that died is no bug)."""
    if bug is False or (bug is None and isinstance(err, DiffPluginError | OSError)):
        return Failure(str(err).strip() or type(err).__name__, type(err).__name__, internal=False)
    details = "".join(traceback.format_exception(err))
    return Failure(_first_line(err), type(err).__name__, internal=True, log=_log(details), details=details)


def explained(err: BaseException) -> str:
    """`err` for a message that already says what failed (`cannot install X: ...`)."""
    return describe(err).text()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _log(details: str) -> Path | None:
    """Append `details` to the log; None when the log cannot be written (a read-only data folder)."""
    import logging.handlers  # here, not at import: most commands never report a bug

    path = log_file()
    logger = logging.getLogger("diffplugin.errors")
    logger.propagate = False  # the traceback goes to the file; the user sees the one line printed
    logger.setLevel(logging.ERROR)
    with _log_lock:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_BYTES, backupCount=1,
                                                           encoding="utf-8")
        except OSError:
            return None
        # A handler per report: the data folder may differ between calls (DIFFPLUGIN_HOME), and no file stays open.
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        failed: list[object] = []  # a full disk: said in the notice instead of printing logging's own report
        handler.handleError = failed.append  # type: ignore[method-assign, assignment]
        logger.addHandler(handler)
        try:
            logger.error("internal error in `%s` (pid %d)\n%s", shlex.join(sys.argv), os.getpid(), details.rstrip())
        finally:
            logger.removeHandler(handler)
            try:
                handler.close()  # it flushes: a full disk may show only here
            except OSError as err:
                failed.append(err)
    return None if failed else path
