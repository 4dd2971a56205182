"""The root of every error a user can cause, with the exit status the command line maps it to.

A subclass says what went wrong (ConfigError, StoreError, KeyFileError, UsageError, CannotRun,
OcrUnavailable) and carries its `exit_status` as a class attribute; its str() is the one line
shown on stderr. `relay.cli.main` catches RelayError alone: print the line, exit with the
status. Anything else is a bug in the relay and keeps its traceback.

Exit statuses (README "Commands"): 2 for a bad invocation or configuration (the user must
change what they typed or wrote), 1 for a command that cannot run here (database, key file,
input too large, OCR engine missing). Pure: no imports.
"""

from __future__ import annotations

USAGE = 2  # bad arguments, a bad config or a missing input file: fix the invocation
CANNOT_RUN = 1  # the command was right, but cannot run here (database, key file, OCR, size)


class RelayError(Exception):
    """A user-caused problem; str() is the one line to show, `exit_status` the process exit."""

    exit_status: int = CANNOT_RUN
