"""Downloading checkpoints into the Keras cache: atomic, verified, mirror-aware."""

import hashlib
import os
import uuid

import keras

MIRROR_ENV = "FFZOO_WEIGHTS_MIRROR"
CACHE_SUBDIR = os.path.join("models", "ffzoo")


def cache_dir():
    """`$KERAS_HOME/models/ffzoo` (default `~/.keras/models/ffzoo`), created if needed."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    path = os.path.join(home, CACHE_SUBDIR)
    os.makedirs(path, exist_ok=True)
    return path


def source_url(preset):
    """The preset's URL, or the same file name under `$FFZOO_WEIGHTS_MIRROR`."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return mirror.rstrip("/") + "/" + preset["file_name"]
    return preset["source_url"]


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path, expected, url):
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(
            f"The file downloaded from {url} has sha256 {actual}, but the weights table "
            f"expects {expected}: it is corrupt, truncated or not the published file. "
            "Nothing was cached; try again, or check the mirror."
        )


def fetch(preset, read):
    """Downloads the preset's source file if needed and returns `read(local_path)`.

    The download goes to a temporary name in the cache and is renamed into place only
    after it is complete, its sha256 (when the table has one) matches and `read`
    succeeded on it; a failed, corrupt or interrupted download leaves nothing behind.
    A cached file that fails the same checks is removed.
    """
    directory = cache_dir()
    final = os.path.join(directory, preset["file_name"])
    if os.path.exists(final):
        try:
            _verify(final, preset.get("sha256"), final)
            return read(final)
        except ValueError:  # corrupt or unreadable: drop it so the next call downloads again
            os.remove(final)
            raise
    url = source_url(preset)
    partial = f".{preset['file_name']}.{uuid.uuid4().hex[:12]}.part"
    partial_path = os.path.join(directory, partial)
    try:
        home = os.path.dirname(os.path.dirname(directory))
        keras.utils.get_file(partial, origin=url, cache_dir=home, cache_subdir=CACHE_SUBDIR)
        _verify(partial_path, preset.get("sha256"), url)
        result = read(partial_path)
        os.replace(partial_path, final)
    except BaseException:
        if os.path.exists(partial_path):
            os.remove(partial_path)
        raise
    return result
