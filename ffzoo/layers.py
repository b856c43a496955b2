"""Layers of the feed-forward-only vision transformer.

Every layer here uses only `keras.ops` and `keras.random`, so it runs unchanged on
TensorFlow, JAX and PyTorch. Each one is registered for serialization and its
`get_config()` returns exactly its constructor arguments.

Shapes use B = batch, N = tokens (class token included), E = embedding width.
"""

import math

import keras
from keras import ops

# timm's `trunc_normal_(std=0.02)` truncates at +-2 in absolute value, that is at
# +-100 standard deviations: in distribution it is a plain normal. Keras'
# TruncatedNormal would cut at +-2 std (and shrink the std by 12%), so the
# reference initialisation is a RandomNormal.
REFERENCE_STD = 0.02
LAYER_NORM_EPSILON = 1e-6


def _normal_init():
    return keras.initializers.RandomNormal(stddev=REFERENCE_STD)


def _jax_backend():
    """True on JAX, whose XLA-compiled CPU code is slow at transposes."""
    return keras.backend.backend() == "jax"


def gelu(x):
    """GELU in its exact erf form, `0.5 * x * (1 + erf(x / sqrt(2)))`, as PyTorch computes it.

    On JAX and TensorFlow the formula is spelled out: their exact GELUs evaluate an
    erfc form that runs 2-3x slower on CPU (measured: 2.8 vs 0.9 ms in XLA, 9.1 vs
    4.7 ms in TensorFlow, for 32 x 197 x 768 values). PyTorch's fused GELU is faster.
    """
    if keras.backend.backend() in ("jax", "tensorflow"):
        return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))
    return ops.gelu(x, approximate=False)


def _dense(units, name, dtype):
    return keras.layers.Dense(
        units,
        kernel_initializer=_normal_init(),
        bias_initializer="zeros",
        dtype=dtype,
        name=name,
    )


def _layer_norm(epsilon, name, dtype):
    """A LayerNorm over the last axis. Keras computes the statistics in float32 for
    half-precision inputs."""
    return keras.layers.LayerNormalization(epsilon=epsilon, dtype=dtype, name=name)


def _dropout(rate, name, dtype):
    """A Dropout layer, or None at rate 0 (an inference graph holds nothing unused)."""
    return keras.layers.Dropout(rate, dtype=dtype, name=name) if rate > 0.0 else None


def _apply(layer, x, training):
    return x if layer is None else layer(x, training=training)


@keras.saving.register_keras_serializable(package="ffzoo")
class PatchEmbedding(keras.layers.Layer):
    """Non-overlapping `patch_size` x `patch_size` patches, each projected to `embed_dim`.

    A convolution with kernel = stride = `patch_size` and a bias, as in the reference.
    Its initialisation is PyTorch's `Conv2d` default, which the reference keeps:
    kernel and bias uniform in +-1/sqrt(fan_in).

    Input `(B, H, W, C)`; output the patch grid `(B, H // patch_size, W // patch_size,
    embed_dim)` (pixels past the last whole patch are dropped, as PyTorch does).
    """

    def __init__(self, patch_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.embed_dim = int(embed_dim)

    def build(self, input_shape):
        channels = input_shape[-1]
        fan_in = channels * self.patch_size * self.patch_size
        bound = 1.0 / math.sqrt(fan_in)
        self.kernel = self.add_weight(
            shape=(self.patch_size, self.patch_size, channels, self.embed_dim),
            initializer=keras.initializers.RandomUniform(-bound, bound),
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(self.embed_dim,),
            initializer=keras.initializers.RandomUniform(-bound, bound),
            name="bias",
        )

    def call(self, images):
        grid = ops.conv(
            images,
            ops.cast(self.kernel, images.dtype),
            strides=self.patch_size,
            padding="valid",
            data_format="channels_last",
        )
        return grid + ops.cast(self.bias, grid.dtype)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        size = self.patch_size
        return (
            batch,
            None if height is None else height // size,
            None if width is None else width // size,
            self.embed_dim,
        )

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=self.patch_size, embed_dim=self.embed_dim)
        return config


@keras.saving.register_keras_serializable(package="ffzoo")
class ClassTokenPositionEmbedding(keras.layers.Layer):
    """Flattens the patch grid into tokens, prepends the class token, adds positions.

    Positions are learned as a `grid_size` grid plus one vector for the class token,
    as in the reference. When the patch grid differs from `grid_size`, the grid is
    resized bilinearly (half-pixel centres, no antialiasing, like PyTorch's
    `F.interpolate(mode="bilinear", align_corners=False)`) on every call.

    Input `(B, gh, gw, E)`; output `(B, 1 + gh * gw, E)`, patches in row-major order.
    """

    def __init__(self, grid_size=(14, 14), **kwargs):
        super().__init__(**kwargs)
        self.grid_size = tuple(int(s) for s in grid_size)

    def build(self, input_shape):
        embed_dim = input_shape[-1]
        self.class_token = self.add_weight(
            shape=(embed_dim,), initializer=_normal_init(), name="class_token"
        )
        self.class_position = self.add_weight(
            shape=(embed_dim,), initializer=_normal_init(), name="class_position"
        )
        self.position_grid = self.add_weight(
            shape=(*self.grid_size, embed_dim),
            initializer=_normal_init(),
            name="position_grid",
        )

    def resized_position_grid(self, grid_shape):
        """The position grid at `grid_shape` (float32, resized when it differs)."""
        grid = ops.convert_to_tensor(self.position_grid)
        if tuple(grid_shape) == self.grid_size:
            return grid
        return ops.image.resize(
            grid[None],
            grid_shape,
            interpolation="bilinear",
            antialias=False,
            data_format="channels_last",
        )[0]

    def call(self, grid):
        _, height, width, embed_dim = grid.shape
        positions = self.resized_position_grid((height, width))
        patches = grid + ops.cast(positions, grid.dtype)
        patches = ops.reshape(patches, (-1, height * width, embed_dim))
        first = ops.cast(self.class_token + self.class_position, grid.dtype)
        first = ops.broadcast_to(first[None, None, :], (ops.shape(grid)[0], 1, embed_dim))
        return ops.concatenate([first, patches], axis=1)

    def compute_output_shape(self, input_shape):
        batch, height, width, embed_dim = input_shape
        return (batch, 1 + height * width, embed_dim)

    def get_config(self):
        config = super().get_config()
        config.update(grid_size=self.grid_size)
        return config


@keras.saving.register_keras_serializable(package="ffzoo")
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops a residual branch for whole samples while training.

    Each sample survives with probability `1 - rate`; survivors are scaled by
    `1 / (1 - rate)`. Draws come from the layer's own `SeedGenerator`, so jitted
    training (JAX) gets fresh masks on every step. At rate 0 the layer is the identity
    and holds no `SeedGenerator` (no state variable in an inference model).
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1); got {rate}.")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.rate > 0.0 else None

    def call(self, x, training=False):
        if not training or self.seed_generator is None:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        draw = keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype)
        mask = ops.cast(draw < keep, x.dtype)
        return x * (mask / keep)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="ffzoo")
class FeedForward(keras.layers.Layer):
    """Linear -> GELU (exact erf form) -> Dropout -> Linear -> Dropout, on the last axis."""

    def __init__(self, hidden_dim, output_dim, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.dropout_rate = float(dropout_rate)
        self.fc1 = _dense(self.hidden_dim, "fc1", self.dtype_policy)
        self.fc2 = _dense(self.output_dim, "fc2", self.dtype_policy)
        self.dropout1 = _dropout(self.dropout_rate, "dropout1", self.dtype_policy)
        self.dropout2 = _dropout(self.dropout_rate, "dropout2", self.dtype_policy)

    def build(self, input_shape):
        self.fc1.build(input_shape)
        self.fc2.build((*input_shape[:-1], self.hidden_dim))

    def call(self, x, training=False):
        x = _apply(self.dropout1, gelu(self.fc1(x)), training)
        return _apply(self.dropout2, self.fc2(x), training)

    def call_on_axis_1(self, x, training=False):
        """The same FF applied along axis 1 of `(B, N, E)`, without moving N last.

        `fc1` / `fc2` are used through their kernels with einsum; the layer must have
        been built for inputs whose last axis is N.
        """
        def dense(layer, y, spec):
            kernel = ops.cast(layer.kernel, y.dtype)
            return ops.einsum(spec, y, kernel) + ops.cast(layer.bias, y.dtype)[:, None]

        h = _apply(self.dropout1, gelu(dense(self.fc1, x, "bne,nh->bhe")), training)
        return _apply(self.dropout2, dense(self.fc2, h, "bhe,hn->bne"), training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            output_dim=self.output_dim,
            dropout_rate=self.dropout_rate,
        )
        return config


class _ResidualFF(keras.layers.Layer):
    """`x + DropPath(FeedForward(LayerNorm(x)))` over the last axis of width `dim`."""

    def __init__(self, dim, hidden_dim, dropout_rate=0.0, drop_path_rate=0.0,
                 epsilon=LAYER_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.hidden_dim = int(hidden_dim)
        self.dropout_rate = float(dropout_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.epsilon = float(epsilon)
        self.norm = _layer_norm(self.epsilon, "norm", self.dtype_policy)
        self.ff = FeedForward(self.hidden_dim, self.dim, self.dropout_rate,
                              dtype=self.dtype_policy, name="ff")
        self.drop_path = DropPath(self.drop_path_rate, dtype=self.dtype_policy, name="drop_path")

    def _branch_input_shape(self, input_shape):
        return input_shape

    def build(self, input_shape):
        shape = self._branch_input_shape(input_shape)
        if shape[-1] != self.dim:
            raise ValueError(
                f"{self.__class__.__name__} '{self.name}' was built for width {self.dim} "
                f"but its input has {shape[-1]} on the mixed axis (input shape {input_shape})."
            )
        self.norm.build(shape)
        self.ff.build(shape)

    def residual(self, x, training):
        return x + self.drop_path(self.ff(self.norm(x), training=training), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim,
            hidden_dim=self.hidden_dim,
            dropout_rate=self.dropout_rate,
            drop_path_rate=self.drop_path_rate,
            epsilon=self.epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="ffzoo")
class FeatureFF(_ResidualFF):
    """Feed-forward over the feature axis: `x + DropPath(FF(LayerNorm(x)))`.

    Input and output `(B, N, dim)`; the FF hidden width is `hidden_dim`.
    """

    def call(self, x, training=False):
        return self.residual(x, training)


@keras.saving.register_keras_serializable(package="ffzoo")
class TokenFF(_ResidualFF):
    """Feed-forward over the token axis, the paper's replacement for attention.

    Input and output `(B, dim, E)` where `dim` is the token count. The tokens are
    moved to the last axis, LayerNorm normalizes over the tokens (its scale and
    offset have `dim` entries), the FF mixes tokens with hidden width `hidden_dim`,
    and the result is moved back.
    """

    def _branch_input_shape(self, input_shape):
        return (input_shape[0], input_shape[2], input_shape[1])

    def call(self, x, training=False):
        if _jax_backend():
            # XLA's CPU transposes are slow; normalize and mix along axis 1 in place.
            y = ops.layer_normalization(x, ops.cast(self.norm.gamma, x.dtype),
                                        ops.cast(self.norm.beta, x.dtype), axis=1,
                                        epsilon=self.epsilon)
            y = self.ff.call_on_axis_1(y, training=training)
            return x + self.drop_path(y, training=training)
        x = ops.transpose(x, (0, 2, 1))
        return ops.transpose(self.residual(x, training), (0, 2, 1))


@keras.saving.register_keras_serializable(package="ffzoo")
class FFBlock(keras.layers.Layer):
    """One block of the FF-only ViT: a feature FF, then a token FF.

    Args:
        embed_dim: width E of each token.
        num_tokens: N, the token count (class token included) the block mixes over.
        mlp_dim: hidden width of the feature FF (`int(E * mlp_ratio)` in the paper).
        token_mlp_dim: hidden width of the token FF (`int(N * mlp_ratio)` in the
            paper; a fixed value makes the cost linear in N).
        dropout_rate: dropout inside both FFs.
        drop_path_rate: stochastic depth rate of both residual branches.
        epsilon: LayerNorm epsilon (1e-6 in the reference).
    """

    def __init__(self, embed_dim, num_tokens, mlp_dim, token_mlp_dim, dropout_rate=0.0,
                 drop_path_rate=0.0, epsilon=LAYER_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.num_tokens = int(num_tokens)
        self.mlp_dim = int(mlp_dim)
        self.token_mlp_dim = int(token_mlp_dim)
        self.dropout_rate = float(dropout_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.epsilon = float(epsilon)
        common = dict(dropout_rate=self.dropout_rate, drop_path_rate=self.drop_path_rate,
                      epsilon=self.epsilon, dtype=self.dtype_policy)
        self.feature_ff = FeatureFF(self.embed_dim, self.mlp_dim, name="feature_ff", **common)
        self.token_ff = TokenFF(self.num_tokens, self.token_mlp_dim, name="token_ff", **common)

    def build(self, input_shape):
        self.feature_ff.build(input_shape)
        self.token_ff.build(input_shape)

    def call(self, x, training=False):
        x = self.feature_ff(x, training=training)
        return self.token_ff(x, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            embed_dim=self.embed_dim,
            num_tokens=self.num_tokens,
            mlp_dim=self.mlp_dim,
            token_mlp_dim=self.token_mlp_dim,
            dropout_rate=self.dropout_rate,
            drop_path_rate=self.drop_path_rate,
            epsilon=self.epsilon,
        )
        return config


POOLING_MODES = ("token", "avg", "max")


@keras.saving.register_keras_serializable(package="ffzoo")
class TokenPooling(keras.layers.Layer):
    """Reduces `(B, N, E)` tokens to `(B, E)`.

    `"token"` takes the class token (token 0), as the classifier does; `"avg"` and
    `"max"` pool over the patch tokens only (the class token excluded, as in timm).
    """

    def __init__(self, mode="token", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLING_MODES:
            raise ValueError(f"TokenPooling mode must be one of {POOLING_MODES}; got {mode!r}.")
        self.mode = mode

    def call(self, tokens):
        if self.mode == "token":
            return tokens[:, 0]
        if self.mode == "avg":
            return ops.mean(tokens[:, 1:], axis=1)
        return ops.max(tokens[:, 1:], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config


@keras.saving.register_keras_serializable(package="ffzoo")
class PatchGrid(keras.layers.Layer):
    """Patch tokens `(B, N, E)` as an image-shaped grid: `(B, H, W, E)`, or `(B, E, H, W)`
    with `channels_first=True`.

    The last `H * W` tokens are the patches in row-major order; the tokens before them
    (the class token) are dropped. The feature maps of `feature_blocks=`.
    """

    def __init__(self, grid_size, channels_first=False, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = tuple(int(n) for n in grid_size)
        self.channels_first = bool(channels_first)

    def call(self, tokens):
        height, width = self.grid_size
        patches = tokens[:, tokens.shape[1] - height * width:]
        grid = ops.reshape(patches, (-1, height, width, tokens.shape[-1]))
        return ops.transpose(grid, (0, 3, 1, 2)) if self.channels_first else grid

    def compute_output_shape(self, input_shape):
        height, width = self.grid_size
        if self.channels_first:
            return (input_shape[0], input_shape[2], height, width)
        return (input_shape[0], height, width, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(grid_size=list(self.grid_size), channels_first=self.channels_first)
        return config


@keras.saving.register_keras_serializable(package="ffzoo")
class TokenAttention(keras.layers.Layer):
    """Multi-head self-attention over tokens, the ViT/DeiT counterpart of `TokenFF`.

    `x + DropPath(proj(attention(LayerNorm(x))))` with a fused `qkv` projection (timm's
    layout), scaled dot-product attention and `num_heads` heads of width
    `dim // num_heads`. Input and output `(B, N, dim)`; any N.
    """

    def __init__(self, dim, num_heads, dropout_rate=0.0, attention_dropout_rate=0.0,
                 drop_path_rate=0.0, epsilon=LAYER_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}.")
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.dropout_rate = float(dropout_rate)
        self.attention_dropout_rate = float(attention_dropout_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.epsilon = float(epsilon)
        self.head_dim = self.dim // self.num_heads
        policy = self.dtype_policy
        self.norm = _layer_norm(self.epsilon, "norm", policy)
        self.qkv = _dense(3 * self.dim, "qkv", policy)
        self.proj = _dense(self.dim, "proj", policy)
        self.attention_dropout = _dropout(self.attention_dropout_rate, "attention_dropout", policy)
        self.proj_dropout = _dropout(self.dropout_rate, "proj_dropout", policy)
        self.drop_path = DropPath(self.drop_path_rate, dtype=policy, name="drop_path")

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.qkv.build(input_shape)
        self.proj.build(input_shape)

    def attend(self, x, training=False):
        """Self-attention of `(B, N, dim)` tokens (no norm, no residual)."""
        tokens = x.shape[1]
        qkv = ops.reshape(self.qkv(x), (-1, tokens, 3, self.num_heads, self.head_dim))
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, N, heads, head_dim)
        scale = self.head_dim ** -0.5
        if training and self.attention_dropout is not None:
            logits = ops.einsum("bqhd,bkhd->bhqk", query, key) * ops.cast(scale, x.dtype)
            weights = self.attention_dropout(ops.softmax(logits, axis=-1), training=training)
            out = ops.einsum("bhqk,bkhd->bqhd", weights, value)
        else:
            out = ops.dot_product_attention(query, key, value, scale=scale)
        out = ops.reshape(out, (-1, tokens, self.dim))
        return _apply(self.proj_dropout, self.proj(out), training)

    def call(self, x, training=False):
        return x + self.drop_path(self.attend(self.norm(x), training=training), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim,
            num_heads=self.num_heads,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            drop_path_rate=self.drop_path_rate,
            epsilon=self.epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="ffzoo")
class AttentionBlock(keras.layers.Layer):
    """One ViT/DeiT block: token attention, then a feature FF (pre-norm, residual).

    Args:
        embed_dim: width E of each token.
        num_heads: attention heads.
        mlp_dim: hidden width of the feature FF.
        dropout_rate: dropout after the attention projection and inside the FF.
        attention_dropout_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth rate of both residual branches.
        epsilon: LayerNorm epsilon (1e-6 in DeiT).
    """

    def __init__(self, embed_dim, num_heads, mlp_dim, dropout_rate=0.0, attention_dropout_rate=0.0,
                 drop_path_rate=0.0, epsilon=LAYER_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.dropout_rate = float(dropout_rate)
        self.attention_dropout_rate = float(attention_dropout_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.epsilon = float(epsilon)
        policy = self.dtype_policy
        self.attention = TokenAttention(
            self.embed_dim, self.num_heads, self.dropout_rate, self.attention_dropout_rate,
            self.drop_path_rate, self.epsilon, dtype=policy, name="attention")
        self.feature_ff = FeatureFF(self.embed_dim, self.mlp_dim, self.dropout_rate,
                                    self.drop_path_rate, self.epsilon, dtype=policy, name="feature_ff")

    def build(self, input_shape):
        self.attention.build(input_shape)
        self.feature_ff.build(input_shape)

    def call(self, x, training=False):
        return self.feature_ff(self.attention(x, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            embed_dim=self.embed_dim,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            drop_path_rate=self.drop_path_rate,
            epsilon=self.epsilon,
        )
        return config
