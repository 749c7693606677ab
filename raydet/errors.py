"""The errors a user can fix, and how a command line reports them.

``ConfigError`` (a bad config) and ``DataError`` (bad input data) are both
``UserError``s: their message says what is wrong, where (file, key path,
record) and what to do.  A command line wrapped in ``report_user_errors``
prints such an error as one ``error: ...`` line on stderr and exits with code
2 — never a traceback.  Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """A problem the user fixes in their config, data or command line; the message is complete.

    A ``ValueError``, so one raised while a component is built is reported as a bad argument.
    """


def report_user_errors(main: Callable[[], int | None]) -> int:
    """Run a command line's body; a ``UserError`` becomes one stderr line and exit code 2."""
    try:
        return main() or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
