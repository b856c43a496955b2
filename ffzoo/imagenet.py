"""ImageNet-1k class ids and names, offline: `decode_predictions`."""

import functools
import importlib.resources

import numpy as np

NUM_CLASSES = 1000


@functools.lru_cache(maxsize=None)
def imagenet_classes():
    """`[(wnid, name), ...]` in the models' class order: WordNet ids sorted."""
    text = importlib.resources.files("ffzoo").joinpath("imagenet_classes.txt").read_text()
    rows = [tuple(line.split("\t", 1)) for line in text.splitlines()
            if line.strip() and not line.startswith("#")]
    if len(rows) != NUM_CLASSES or [w for w, _ in rows] != sorted(w for w, _ in rows):
        raise RuntimeError("ffzoo/imagenet_classes.txt is damaged: expected 1000 sorted WordNet ids.")
    return rows


def decode_predictions(predictions, top=5):
    """Turns `(batch, 1000)` scores into `[[(wnid, name, score), ...], ...]`, best first.

    Scores may be probabilities or logits; they are reported as given.
    """
    scores = np.asarray(predictions)
    if scores.ndim != 2 or scores.shape[1] != NUM_CLASSES:
        raise ValueError(
            f"decode_predictions expects a batch of ImageNet-1k scores, shape (batch, 1000); "
            f"got shape {scores.shape}."
        )
    if not 1 <= top <= NUM_CLASSES:
        raise ValueError(f"top must be in 1..1000; got {top}.")
    classes = imagenet_classes()
    decoded = []
    for row in scores:
        best = np.argsort(-row, kind="stable")[:top]
        decoded.append([(classes[i][0], classes[i][1], float(row[i])) for i in best])
    return decoded
