"""Atomic file writes, shared by weight conversion, downloads and training runs.

`write_atomically(path, write)` calls `write(temporary_path)`, flushes the file to disk
and renames it over `path`: whenever the process dies (or the machine loses power),
`path` holds the old file or the new one, whole, or is absent. The temporary file is
`<path>.<pid>.partial` in the same directory (`<path>.<pid>.partial.weights.h5` for
Keras weights files, whose writer insists on the suffix); `remove_partials` clears
those a killed process left.
"""

import fnmatch
import os
import re
import sys

_WEIGHTS_SUFFIX = ".weights.h5"
_PARTIAL = re.compile(r"^(?P<target>.+)\.(?P<pid>\d+)\.partial(\.weights\.h5)?$")
_WRITES = {}  # basename pattern -> writes seen (the fault-injection hook of the tests)


def partial_path(path):
    """The temporary name `write_atomically` uses for `path` in this process."""
    suffix = _WEIGHTS_SUFFIX if path.endswith(_WEIGHTS_SUFFIX) else ""
    return f"{path}.{os.getpid()}.partial{suffix}"


def write_atomically(path, write):
    """Writes `path` through `write(temporary_path)` so that it is whole or absent.

    Returns what `write` returns. If `write` (or anything after it) raises, the
    temporary file is removed and `path` is left as it was.
    """
    partial = partial_path(path)
    try:
        result = write(partial)
        _fault_point(path)
        fsync(partial)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    fsync(os.path.dirname(os.path.abspath(path)), directory=True)
    return result


def fsync(path, directory=False):
    """Flushes a file (or a directory's entries) to disk."""
    try:
        descriptor = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # not every system opens directories (Windows); the rename stands
            return
        raise
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def is_partial(name):
    """Whether a file name is a temporary file of `write_atomically`."""
    return bool(_PARTIAL.match(name))


def remove_partials(directory, target=None, only_dead=False):
    """Removes the temporary files of unfinished writes in `directory`.

    `target` limits it to those of one file name; `only_dead` keeps those of processes
    still alive (a shared cache, where another process may be writing). Returns the
    names removed.
    """
    if not os.path.isdir(directory):
        return []
    removed = []
    for name in sorted(os.listdir(directory)):
        match = _PARTIAL.match(name)
        if not match or (target is not None and match["target"] != target):
            continue
        if only_dead and _process_is_alive(int(match["pid"])):
            continue
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            try:
                os.remove(path)
            except OSError:
                continue
            removed.append(name)
    return removed


def _process_is_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _fault_point(path):
    """Test hook: `FFZOO_TEST_EXIT_AT="PATTERN:N"` ends the process, as a kill would (no
    cleanup), at the N-th atomic write of a file whose name matches PATTERN, after
    the temporary file is written and before it replaces the file."""
    setting = os.environ.get("FFZOO_TEST_EXIT_AT")
    if not setting:
        return
    pattern, count = setting.rsplit(":", 1)
    if fnmatch.fnmatch(os.path.basename(path), pattern):
        _WRITES[pattern] = _WRITES.get(pattern, 0) + 1
        if _WRITES[pattern] == int(count):
            print(f"FFZOO_TEST_EXIT_AT: exiting at write {count} of {os.path.basename(path)}",
                  file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(99)
