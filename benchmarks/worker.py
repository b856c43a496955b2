"""A benchmark contender in its own process, driven over stdin/stdout by the parent.

Each contender (the PyTorch baseline, or ffzoo on one Keras backend with one compile
setting) runs in a process of its own: TensorFlow and PyTorch in one process slow
each other down (measured here: PyTorch 15% slower once TensorFlow is initialised).
The parent alternates single timed calls across the workers, so the machine's drift
hits every contender alike.

Protocol: the worker builds its model, makes one untimed call (compilation, warm-up)
and prints one JSON line when ready; it then answers each `run` line with the seconds
one call took, `rss` with its peak resident memory in MiB, and exits on `quit`. With
`--output`, it saves its first output (the logits of `infer`) so the parent can check
that every contender computes the same thing.

    python -m benchmarks.worker JOB IMPL [options]
    JOB:  infer (forward pass), train (forward, backward, AdamW step), matmul
    IMPL: pytorch_eager, pytorch_compile, or ffzoo_<mode> (modes: see KERAS_MODES);
          for matmul, pytorch_eager or anything else (the Keras backend's own product)

Models have their registered input size and token-FF width unless `--image-size` /
`--token-mlp-dim` (ffzoo only) change them. Without `--state`, ffzoo models keep their
own random initialization (the scaling benchmark, where no PyTorch baseline takes part).
"""

import argparse
import json
import sys
import time

import numpy as np

from benchmarks import harness

# The compile settings tried on each backend; the benchmark reports the best.
KERAS_MODES = {
    "tensorflow": {"graph": False, "xla": True},
    "jax": {"jit": True},
    "torch": {"eager": False, "compile": True},
}


def batch_data(batch, image_size):
    """Random channels-last images in [-2, 2] and ImageNet labels, the same in every worker."""
    rng = np.random.default_rng(0)
    images = rng.uniform(-2, 2, (batch, image_size, image_size, 3)).astype("float32")
    labels = rng.integers(0, 1000, batch).astype("int32")
    return images, labels


def reference_module(model_name):
    """The PyTorch reference FFViT with the registered dims of `model_name` (an FF model)."""
    from ffzoo.models.registry import model_dims
    from references.torch_ffvit import FFViT

    dims = model_dims(model_name)
    return FFViT(patch_size=dims["patch_size"], embed_dim=dims["embed_dim"], depth=dims["depth"],
                 mlp_ratio=dims["mlp_ratio"], image_size=dims["image_size"],
                 pos_grid=dims["pos_grid_size"])


def reference_state(model_name, seed=0):
    """The baseline's random weights, which every contender loads (a dict of arrays)."""
    import torch

    torch.manual_seed(seed)
    return {k: v.numpy() for k, v in reference_module(model_name).state_dict().items()}


def default_image_size(model_name):
    from ffzoo.models.registry import model_dims

    return model_dims(model_name)["image_size"]


def pytorch_contender(job, model_name, batch, state_path, compiled):
    import torch

    module = reference_module(model_name)
    state = dict(np.load(state_path))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    images, labels = batch_data(batch, default_image_size(model_name))
    target = torch.from_numpy(labels).long()
    runner = torch.compile(module) if compiled else module

    def inputs():
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    if job == "infer":
        module.eval()

        def step():
            with torch.no_grad():
                return runner(inputs()).numpy()
        return step, step()
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, weight_decay=0.05)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(runner(inputs()), target)
        loss.backward()
        optimizer.step()
        return float(loss)
    return step, np.array([0.0])


def ffzoo_contender(job, model_name, batch, state_path, mode, image_size=None, token_mlp_dim=None):
    import keras

    import ffzoo
    from ffzoo.weights import convert

    jit = KERAS_MODES[keras.backend.backend()][mode]
    image_size = image_size or default_image_size(model_name)
    options = {} if token_mlp_dim is None else {"token_mlp_dim": token_mlp_dim}
    model = ffzoo.create_model(model_name, image_size=image_size, classifier_activation=None, **options)
    if state_path:
        convert.load_state_dict(model, dict(np.load(state_path)), "ff_pth")
    images, labels = batch_data(batch, image_size)
    if job == "infer":
        model.compile(jit_compile=jit)

        def step():
            return np.asarray(model.predict_on_batch(images))
        return step, step()
    model.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)

    def step():
        return float(model.train_on_batch(images, labels))
    return step, np.array([0.0])


def matmul_contender(impl, size):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    if impl == "pytorch_eager":
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)

        def step():
            return (ta @ tb).sum()
        return step, None
    import keras

    ka, kb = keras.ops.convert_to_tensor(a), keras.ops.convert_to_tensor(b)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        product = jax.jit(lambda x, y: x @ y)

        def step():
            return product(ka, kb).block_until_ready()
    elif backend == "tensorflow":
        import tensorflow as tf

        product = tf.function(lambda x, y: tf.matmul(x, y))

        def step():
            return product(ka, kb).numpy()
    else:
        def step():
            return keras.ops.matmul(ka, kb)
    return step, None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("job", choices=["infer", "train", "matmul"])
    parser.add_argument("impl")
    parser.add_argument("--model", default="ffvit_tiny_patch16_224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, help="ffzoo only; default: the model's")
    parser.add_argument("--token-mlp-dim", type=int, help="ffzoo FF models only; default: 4 x tokens")
    parser.add_argument("--size", type=int, default=2048, help="matmul: the matrices' side")
    parser.add_argument("--state", help="npz of the reference weights")
    parser.add_argument("--output", help="where to save the first output (for the agreement check)")
    args = parser.parse_args()
    if args.job == "matmul":
        step, first = matmul_contender(args.impl, args.size)
    elif args.impl.startswith("pytorch_"):
        step, first = pytorch_contender(args.job, args.model, args.batch, args.state,
                                        compiled=args.impl == "pytorch_compile")
    else:
        step, first = ffzoo_contender(args.job, args.model, args.batch, args.state,
                                      mode=args.impl[len("ffzoo_"):], image_size=args.image_size,
                                      token_mlp_dim=args.token_mlp_dim)
    if args.output and first is not None:
        np.save(args.output, first)
    step()  # warm up (compilation) before reporting ready
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "run":
            start = time.perf_counter()
            step()
            print(time.perf_counter() - start, flush=True)
        elif command == "rss":
            print(harness.peak_rss_mib(), flush=True)
        elif command == "quit":
            break


if __name__ == "__main__":
    main()
