"""Layers of the all-MLP vision models: MLP-Mixer, ResMLP and gMLP.

Like `ffzoo.layers`, only `keras.ops` and `keras.random`: every layer runs unchanged on
TensorFlow, JAX and PyTorch, is registered for serialization, and its `get_config()`
returns exactly its constructor arguments.

These models have no class token: tokens are the `N = grid_h * grid_w` patches, shapes
`(B, N, E)`. A token mixer is a linear map over the token axis (axis 1), applied with
einsum on the weights of a `Dense` built for inputs of width N, so the tokens are never
moved to the last axis. Its kernel is `(N_in, N_out)`, the (in, out) layout of Flax and
of Keras (PyTorch's `nn.Linear(N, N)` stores the transpose).
"""

import keras
from keras import ops

from ffzoo import layers as ffl


def _gelu(x, form):
    """`"erf"`: the exact GELU (PyTorch's default, ResMLP and gMLP); `"tanh"`: the tanh
    approximation (Flax's `nn.gelu` default, which Google's Mixer code uses)."""
    if form == "tanh":
        return ops.gelu(x, approximate=True)
    return ffl.gelu(x)


def _check_gelu(form):
    if form not in ("erf", "tanh"):
        raise ValueError(f"gelu must be 'erf' (exact) or 'tanh' (approximate); got {form!r}.")
    return form


def _mix_tokens(dense, x):
    """`dense` applied over axis 1 of `(B, N, E)`: kernel `(N, M)` -> `(B, M, E)`."""
    kernel = ops.cast(dense.kernel, x.dtype)
    return ops.einsum("bne,nm->bme", x, kernel) + ops.cast(dense.bias, x.dtype)[:, None]


@keras.saving.register_keras_serializable(package="ffzoo")
class Affine(keras.layers.Layer):
    """`alpha * x + beta` over the last axis: ResMLP's replacement for LayerNorm (no
    statistics). `alpha` starts at 1, `beta` at 0."""

    def build(self, input_shape):
        dim = input_shape[-1]
        self.alpha = self.add_weight(shape=(dim,), initializer="ones", name="alpha")
        self.beta = self.add_weight(shape=(dim,), initializer="zeros", name="beta")

    def call(self, x):
        return x * ops.cast(self.alpha, x.dtype) + ops.cast(self.beta, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="ffzoo")
class MixingMLP(keras.layers.Layer):
    """Dense `fc1` -> GELU -> Dropout -> Dense `fc2` -> Dropout, over the last axis, or
    over the token axis (axis 1) with `over_tokens=True`.

    Args:
        hidden_dim: width of `fc1`'s output.
        output_dim: width of `fc2`'s output (the mixed axis's size).
        gelu: `"erf"` (exact) or `"tanh"` (approximate).
        dropout_rate: dropout after the GELU and after `fc2`.
        over_tokens: mix axis 1 of `(B, N, E)` instead of the last axis.
    """

    def __init__(self, hidden_dim, output_dim, gelu="erf", dropout_rate=0.0, over_tokens=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.gelu = _check_gelu(gelu)
        self.dropout_rate = float(dropout_rate)
        self.over_tokens = bool(over_tokens)
        policy = self.dtype_policy
        self.fc1 = ffl._dense(self.hidden_dim, "fc1", policy)
        self.fc2 = ffl._dense(self.output_dim, "fc2", policy)
        self.dropout1 = ffl._dropout(self.dropout_rate, "dropout1", policy)
        self.dropout2 = ffl._dropout(self.dropout_rate, "dropout2", policy)

    def build(self, input_shape):
        width = input_shape[1] if self.over_tokens else input_shape[-1]
        self.fc1.build((None, width))
        self.fc2.build((None, self.hidden_dim))

    def call(self, x, training=False):
        if self.over_tokens:
            h = _gelu(_mix_tokens(self.fc1, x), self.gelu)
            h = ffl._apply(self.dropout1, h, training)
            return ffl._apply(self.dropout2, _mix_tokens(self.fc2, h), training)
        h = ffl._apply(self.dropout1, _gelu(self.fc1(x), self.gelu), training)
        return ffl._apply(self.dropout2, self.fc2(h), training)

    def compute_output_shape(self, input_shape):
        if self.over_tokens:
            return (input_shape[0], self.output_dim, input_shape[2])
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, output_dim=self.output_dim, gelu=self.gelu,
                      dropout_rate=self.dropout_rate, over_tokens=self.over_tokens)
        return config


def _check_tokens(layer, input_shape):
    if input_shape[1] != layer.num_tokens:
        raise ValueError(f"{layer.__class__.__name__} '{layer.name}' mixes {layer.num_tokens} "
                         f"tokens; its input has {input_shape[1]} (input shape {input_shape}).")


class _MLPBlock(keras.layers.Layer):
    """What every block here shares: `num_tokens`, `embed_dim`, the two rates."""

    def __init__(self, num_tokens, embed_dim, dropout_rate=0.0, drop_path_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_tokens = int(num_tokens)
        self.embed_dim = int(embed_dim)
        self.dropout_rate = float(dropout_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.drop_path = ffl.DropPath(self.drop_path_rate, dtype=self.dtype_policy,
                                      name="drop_path")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_tokens=self.num_tokens, embed_dim=self.embed_dim,
                      dropout_rate=self.dropout_rate, drop_path_rate=self.drop_path_rate)
        return config


@keras.saving.register_keras_serializable(package="ffzoo")
class MixerBlock(_MLPBlock):
    """One MLP-Mixer block (Tolstikhin et al. 2021):

        x = x + DropPath(token_mixing(norm1(x)))     an MLP over the N tokens
        x = x + DropPath(channel_mixing(norm2(x)))   an MLP over the E channels

    Args:
        num_tokens, embed_dim: N and E of the `(B, N, E)` input.
        tokens_mlp_dim, channels_mlp_dim: hidden widths of the two MLPs.
        gelu: `"tanh"` (Google's Flax code) or `"erf"` (timm's PyTorch port).
        epsilon: LayerNorm epsilon (Flax's default 1e-6).
    """

    def __init__(self, num_tokens, embed_dim, tokens_mlp_dim, channels_mlp_dim, gelu="tanh",
                 dropout_rate=0.0, drop_path_rate=0.0, epsilon=ffl.LAYER_NORM_EPSILON, **kwargs):
        super().__init__(num_tokens, embed_dim, dropout_rate, drop_path_rate, **kwargs)
        self.tokens_mlp_dim = int(tokens_mlp_dim)
        self.channels_mlp_dim = int(channels_mlp_dim)
        self.gelu = _check_gelu(gelu)
        self.epsilon = float(epsilon)
        policy = self.dtype_policy
        self.norm1 = ffl._layer_norm(self.epsilon, "norm1", policy)
        self.token_mixing = MixingMLP(self.tokens_mlp_dim, self.num_tokens, self.gelu,
                                      self.dropout_rate, over_tokens=True, dtype=policy,
                                      name="token_mixing")
        self.norm2 = ffl._layer_norm(self.epsilon, "norm2", policy)
        self.channel_mixing = MixingMLP(self.channels_mlp_dim, self.embed_dim, self.gelu,
                                        self.dropout_rate, dtype=policy, name="channel_mixing")

    def build(self, input_shape):
        _check_tokens(self, input_shape)
        for layer in (self.norm1, self.token_mixing, self.norm2, self.channel_mixing):
            layer.build(input_shape)

    def call(self, x, training=False):
        x = x + self.drop_path(self.token_mixing(self.norm1(x), training=training),
                               training=training)
        return x + self.drop_path(self.channel_mixing(self.norm2(x), training=training),
                                  training=training)

    def get_config(self):
        config = super().get_config()
        config.update(tokens_mlp_dim=self.tokens_mlp_dim, channels_mlp_dim=self.channels_mlp_dim,
                      gelu=self.gelu, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="ffzoo")
class ResMLPBlock(_MLPBlock):
    """One ResMLP block (Touvron et al. 2021), FAIR's `layers_scale_mlp_blocks`:

        x = x + DropPath(gamma_1 * token_mixer(norm1(x)))   one linear layer over tokens
        x = x + DropPath(gamma_2 * mlp(norm2(x)))           an MLP over channels

    with `Affine` norms and LayerScale vectors `gamma_1`, `gamma_2` starting at
    `init_scale`.

    Args:
        num_tokens, embed_dim: N and E of the `(B, N, E)` input.
        mlp_dim: hidden width of the channel MLP (4 E in ResMLP).
        init_scale: the LayerScale initial value.
    """

    def __init__(self, num_tokens, embed_dim, mlp_dim, init_scale=1e-4, dropout_rate=0.0,
                 drop_path_rate=0.0, **kwargs):
        super().__init__(num_tokens, embed_dim, dropout_rate, drop_path_rate, **kwargs)
        self.mlp_dim = int(mlp_dim)
        self.init_scale = float(init_scale)
        policy = self.dtype_policy
        self.norm1 = Affine(dtype=policy, name="norm1")
        self.token_mixer = ffl._dense(self.num_tokens, "token_mixer", policy)
        self.norm2 = Affine(dtype=policy, name="norm2")
        self.mlp = MixingMLP(self.mlp_dim, self.embed_dim, "erf", self.dropout_rate, dtype=policy,
                             name="mlp")

    def build(self, input_shape):
        _check_tokens(self, input_shape)
        scale = keras.initializers.Constant(self.init_scale)
        self.gamma_1 = self.add_weight(shape=(self.embed_dim,), initializer=scale, name="gamma_1")
        self.gamma_2 = self.add_weight(shape=(self.embed_dim,), initializer=scale, name="gamma_2")
        self.norm1.build(input_shape)
        self.token_mixer.build((None, self.num_tokens))
        self.norm2.build(input_shape)
        self.mlp.build(input_shape)

    def call(self, x, training=False):
        mixed = _mix_tokens(self.token_mixer, self.norm1(x))
        x = x + self.drop_path(ops.cast(self.gamma_1, x.dtype) * mixed, training=training)
        branch = self.mlp(self.norm2(x), training=training)
        return x + self.drop_path(ops.cast(self.gamma_2, x.dtype) * branch, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(mlp_dim=self.mlp_dim, init_scale=self.init_scale)
        return config


@keras.saving.register_keras_serializable(package="ffzoo")
class SpatialGatingUnit(keras.layers.Layer):
    """gMLP's spatial gating unit: splits the features in halves `u, v`, normalizes `v`,
    mixes it over the tokens with one linear layer (`proj`), returns `u * v`.

    Input `(B, N, 2 D)`, output `(B, N, D)`. `proj` starts near the identity gate of
    the paper (weights normal std 1e-6, bias 1), as timm's init does.

    Args:
        num_tokens: N.
        epsilon: LayerNorm epsilon of `v` (1e-5: PyTorch's default, which timm's gate
            keeps).
    """

    def __init__(self, num_tokens, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_tokens = int(num_tokens)
        self.epsilon = float(epsilon)
        policy = self.dtype_policy
        self.norm = ffl._layer_norm(self.epsilon, "norm", policy)
        self.proj = keras.layers.Dense(
            self.num_tokens, kernel_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            bias_initializer="ones", dtype=policy, name="proj")

    def build(self, input_shape):
        if input_shape[-1] % 2:
            raise ValueError(f"SpatialGatingUnit '{self.name}': the gated width "
                             f"{input_shape[-1]} must be even (it is split in halves).")
        _check_tokens(self, input_shape)
        self.norm.build((*input_shape[:-1], input_shape[-1] // 2))
        self.proj.build((None, self.num_tokens))

    def call(self, x):
        u, v = ops.split(x, 2, axis=-1)
        return u * _mix_tokens(self.proj, self.norm(v))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)

    def get_config(self):
        config = super().get_config()
        config.update(num_tokens=self.num_tokens, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="ffzoo")
class GatingBlock(_MLPBlock):
    """One gMLP block (Liu et al. 2021), timm's `SpatialGatingBlock`:

        x = x + DropPath(fc2(gate(Dropout(GELU(fc1(norm(x)))))))

    Args:
        num_tokens, embed_dim: N and E of the `(B, N, E)` input.
        mlp_dim: width of `fc1`'s output (6 E in gMLP); the gate halves it.
        epsilon: epsilon of the block's LayerNorm (1e-6); the gate's is 1e-5.
    """

    def __init__(self, num_tokens, embed_dim, mlp_dim, dropout_rate=0.0, drop_path_rate=0.0,
                 epsilon=ffl.LAYER_NORM_EPSILON, **kwargs):
        super().__init__(num_tokens, embed_dim, dropout_rate, drop_path_rate, **kwargs)
        if int(mlp_dim) % 2:
            raise ValueError(f"mlp_dim {mlp_dim} must be even (the gate splits it in halves).")
        self.mlp_dim = int(mlp_dim)
        self.epsilon = float(epsilon)
        policy = self.dtype_policy
        self.norm = ffl._layer_norm(self.epsilon, "norm", policy)
        self.fc1 = ffl._dense(self.mlp_dim, "fc1", policy)
        self.gate = SpatialGatingUnit(self.num_tokens, dtype=policy, name="gate")
        self.fc2 = ffl._dense(self.embed_dim, "fc2", policy)
        self.dropout1 = ffl._dropout(self.dropout_rate, "dropout1", policy)
        self.dropout2 = ffl._dropout(self.dropout_rate, "dropout2", policy)

    def build(self, input_shape):
        _check_tokens(self, input_shape)
        self.norm.build(input_shape)
        self.fc1.build(input_shape)
        self.gate.build((*input_shape[:-1], self.mlp_dim))
        self.fc2.build((*input_shape[:-1], self.mlp_dim // 2))

    def call(self, x, training=False):
        h = ffl._apply(self.dropout1, ffl.gelu(self.fc1(self.norm(x))), training)
        h = ffl._apply(self.dropout2, self.fc2(self.gate(h)), training)
        return x + self.drop_path(h, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(mlp_dim=self.mlp_dim, epsilon=self.epsilon)
        return config
