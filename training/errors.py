"""How `training.train` and `training.evaluate` fail: one line on stderr, exit status 2.

Failures a user can cause or meet (bad values, missing or unreadable files, a full
disk, a diverged run) are `EXPECTED_ERRORS`; `--debug` or `FFZOO_DEBUG=1` shows the
traceback instead.
"""

import os
import sys

EXPECTED_ERRORS = (ValueError, OSError, FloatingPointError)


def debugging(argv):
    return "--debug" in argv or os.environ.get("FFZOO_DEBUG", "") not in ("", "0")


def one_line(error):
    text = " ".join(str(error).split())
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and text:
        return f"{type(error).__name__}: {text}"
    return text or type(error).__name__


def command(name, argv, body, interrupted):
    """Runs `body()`; returns the exit status: 0, 2 for an expected failure (one line
    `name: what`), 130 for Ctrl-C (the line `name: <interrupted>`; no traceback)."""
    try:
        body()
    except EXPECTED_ERRORS as error:
        if debugging(argv):
            raise
        print(f"{name}: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debugging(argv):
            raise
        print(f"{name}: {interrupted}", file=sys.stderr)
        return 130
    return 0
