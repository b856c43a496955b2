"""Short training runs: the loss goes down, and dropout / stochastic depth are seeded."""

import keras
import numpy as np
import pytest

from tests.families import FAMILIES, small_model


def _pattern_data(n, seed):
    """Noise plus one of four fixed patterns; the label says which pattern."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(99).standard_normal((4, 32, 32, 3))
    labels = rng.integers(0, 4, n)
    images = rng.standard_normal((n, 32, 32, 3)) + patterns[labels]
    return images.astype("float32"), labels


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_reduces_the_loss(family):
    keras.utils.set_random_seed(0)
    images, labels = _pattern_data(64, 0)
    model = small_model(family, embed_dim=32, classes=4, classifier_activation=None,
                        drop_rate=0.1, drop_path_rate=0.1)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(images, labels, batch_size=16, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert losses[0] > 1.2  # about ln(4): chance
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("family", FAMILIES)
def test_each_jitted_training_step_draws_fresh_masks(family):
    # With a zero learning rate the weights never change, so the loss can only differ
    # between steps if dropout and stochastic depth draw new masks each step. Masks
    # drawn without a seed generator would be frozen into the compiled step (JAX).
    keras.utils.set_random_seed(1)
    model = small_model(family, embed_dim=32, classes=4, drop_rate=0.3, drop_path_rate=0.5)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0),
                  loss="sparse_categorical_crossentropy",
                  jit_compile=keras.backend.backend() != "torch")
    images, labels = _pattern_data(8, 1)
    losses = [float(model.train_on_batch(images, labels)) for _ in range(3)]
    assert len(set(losses)) == 3, losses
    evaluation = [float(model.evaluate(images, labels, verbose=0)) for _ in range(2)]
    assert evaluation[0] == evaluation[1]  # no randomness at inference
