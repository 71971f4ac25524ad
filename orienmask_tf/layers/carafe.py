# SPDX-License-Identifier: Apache-2.0
"""CARAFE content-aware upsampling (``CARAFEPack``) in plain TensorFlow ops, NHWC.

CARAFE (Wang et al., "CARAFE: Content-Aware ReAssembly of FEatures", ICCV
2019) upsamples a feature map by ``scale`` with a ``k x k`` reassembly
kernel predicted per output pixel from the content. maYOLACT (Oksuz et al.,
"Mask-aware IoU for Anchor Assignment in Real-time Instance Segmentation",
BMVC 2021) uses it as the top-down upsampler of its FPN (``FPN_CARAFE``).

Written from the recorded specification in
``tests/fixtures/reference/mayolact/README.md`` (section 2):

* ``pixel_shuffle`` / ``pixel_unshuffle``: PyTorch's channel order, in NHWC
  (channel ``c * s**2 + dy * s + dx``: the sub-pixel index is the FAST one;
  ``tf.nn.depth_to_space`` puts it slow and is NOT the same).
* ``normalize_kernels``: the CARAFEPack kernel normaliser (pixel shuffle,
  then a softmax over the ``k**2`` taps of each group).
* ``carafe``: the reassembly op on high-resolution kernels.
* ``CARAFE``: the Keras layer (``CARAFEPack``).

Only static slices, pads, reshapes, transposes (rank <= 5), element-wise
ops, ``Softmax`` and ``Conv2D`` are used in the forward pass, so the layer
runs under XLA and converts to TFLite builtins and ONNX.

Efficiency: all ``s * s`` high-resolution pixels that share a low-resolution
pixel ``(y, x)`` read the same ``k x k`` low-resolution window, so the
reassembly is computed at low resolution for every sub-pixel phase at once
(``k**2`` shifted slices times per-phase weights, accumulated) and the
phases are interleaved back with one reshape/transpose. The gradient is
custom: it recomputes the window (nothing larger than the output is kept
for the backward pass) and uses two batched matmuls.
"""

import keras
import tensorflow as tf

__all__ = ["CARAFE", "carafe", "normalize_kernels", "pixel_shuffle",
           "pixel_unshuffle"]


def _dims(x):
    """Static dims where known, else dynamic scalars (for reshapes)."""
    static = x.shape.as_list()
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(static)]


def pixel_shuffle(x, scale):
    """``torch.nn.functional.pixel_shuffle`` in NHWC.

    ``x`` ``(N, H, W, C * s**2)``: input channel ``c * s**2 + dy * s + dx``
    at ``(y, x)`` goes to channel ``c`` at ``(y * s + dy, x * s + dx)``.
    Returns ``(N, s*H, s*W, C)``.
    """
    if scale == 1:
        return x
    n, h, w, cs = _dims(x)
    c = cs // (scale * scale)
    x = tf.reshape(x, [-1, w, c, scale, scale])            # (N*H, W, C, dy, dx)
    x = tf.transpose(x, [0, 3, 1, 4, 2])                    # (N*H, dy, W, dx, C)
    return tf.reshape(x, [-1, h * scale, w * scale, c])


def pixel_unshuffle(x, scale):
    """Inverse of ``pixel_shuffle``: ``(N, s*H, s*W, C) -> (N, H, W, C*s**2)``."""
    if scale == 1:
        return x
    n, hs, ws, c = _dims(x)
    h, w = hs // scale, ws // scale
    x = tf.reshape(x, [-1, scale, w, scale, c])             # (N*H, dy, W, dx, C)
    x = tf.transpose(x, [0, 2, 4, 1, 3])                    # (N*H, W, C, dy, dx)
    return tf.reshape(x, [-1, h, w, c * scale * scale])


def normalize_kernels(encoder_out, kernel_size, group, scale):
    """CARAFEPack's kernel normaliser: pixel shuffle, then per-group softmax.

    Args:
        encoder_out: ``(N, H, W, k**2 * G * s**2)`` content-encoder logits,
            channel ``(g * k**2 + t) * s**2 + dy * s + dx`` (torch order).
    Returns:
        ``(N, s*H, s*W, G * k**2)`` kernels, channel ``g * k**2 + ky * k + kx``,
        each group's ``k**2`` taps summing to 1 at every pixel.
    """
    taps = kernel_size * kernel_size
    shuffled = pixel_shuffle(encoder_out, scale)
    n, hs, ws, _ = _dims(shuffled)
    logits = tf.reshape(shuffled, [-1, ws, group, taps])
    kernels = tf.nn.softmax(logits, axis=-1)
    return tf.reshape(kernels, [-1, hs, ws, group * taps])


def _lowres_logits(encoder_out, kernel_size, group, scale):
    """Encoder logits -> ``(N*H, W, s**2, G, k**2)`` (phase-major) layout."""
    taps = kernel_size * kernel_size
    n, h, w, _ = _dims(encoder_out)
    x = tf.reshape(encoder_out, [-1, w, group, taps, scale * scale])
    return tf.transpose(x, [0, 1, 4, 2, 3])


def _lowres_kernels(kernels, kernel_size, group, scale):
    """High-res kernels ``(N, sH, sW, G*k**2)`` -> ``(N*H, W, s**2, G, k**2)``."""
    taps = kernel_size * kernel_size
    n, hs, ws, _ = _dims(kernels)
    w = ws // scale
    x = tf.reshape(kernels, [-1, scale, w, scale, group * taps])
    x = tf.transpose(x, [0, 2, 1, 3, 4])                    # (N*H, W, dy, dx, G*k2)
    return tf.reshape(x, [-1, w, scale * scale, group, taps])


def _reassemble(x, weights, kernel_size, group, scale):
    """The reassembly on low-res-layout kernels.

    Args:
        x: ``(N, H, W, C)``.
        weights: ``(N*H, W, s**2, G, k**2)``; ``weights[n*H + y, x, dy*s + dx,
            g, t]`` is the kernel of high-res pixel ``(y*s + dy, x*s + dx)``.
    Returns:
        ``(N, s*H, s*W, C)``.
    """
    k, s, g = kernel_size, scale, group
    r = (k - 1) // 2
    taps = k * k
    n, h, w, c = _dims(x)
    cg = c // g
    padding = [[0, 0], [r, r], [r, r], [0, 0]]

    def window(xp, t):
        ky, kx = divmod(t, k)
        return xp[:, ky:ky + h, kx:kx + w, :]

    @tf.custom_gradient
    def reassemble(x, weights):
        xp = tf.pad(x, padding)
        acc = None
        for t in range(taps):
            term = (tf.reshape(window(xp, t), [-1, w, 1, g, cg])
                    * weights[..., t:t + 1])                # (N*H, W, s2, G, Cg)
            acc = term if acc is None else acc + term
        out = tf.reshape(acc, [-1, w, s, s, c])
        out = tf.transpose(out, [0, 2, 1, 3, 4])            # (N*H, dy, W, dx, C)
        out = tf.reshape(out, [-1, h * s, w * s, c])

        def grad(upstream):
            # upstream -> (N*H*W*G, s2, Cg)
            gr = tf.reshape(upstream, [-1, s, w, s, c])
            gr = tf.transpose(gr, [0, 2, 1, 3, 4])          # (N*H, W, dy, dx, C)
            gr = tf.reshape(gr, [-1, s * s, g, cg])
            wk = tf.reshape(weights, [-1, s * s, g, taps])
            if g > 1:
                gr = tf.transpose(gr, [0, 2, 1, 3])
                wk = tf.transpose(wk, [0, 2, 1, 3])
            gr = tf.reshape(gr, [-1, s * s, cg])
            wk = tf.reshape(wk, [-1, s * s, taps])
            # The k*k window of every low-res pixel: (N*H*W*G, k2, Cg).
            xp = tf.pad(x, padding)
            nb = tf.stack([tf.reshape(window(xp, t), [-1, h, w, g, cg])
                           for t in range(taps)], axis=4)
            nb = tf.reshape(nb, [-1, taps, cg])
            grad_w = tf.matmul(gr, nb, transpose_b=True)    # (NHWG, s2, k2)
            grad_w = tf.reshape(grad_w, [-1, g, s * s, taps])
            if g > 1:
                grad_w = tf.transpose(grad_w, [0, 2, 1, 3])
            grad_w = tf.reshape(grad_w, tf.shape(weights))
            grad_nb = tf.matmul(wk, gr, transpose_a=True)   # (NHWG, k2, Cg)
            grad_nb = tf.reshape(grad_nb, [-1, h, w, g, taps, cg])
            grad_xp = None
            for t in range(taps):
                ky, kx = divmod(t, k)
                piece = tf.pad(tf.reshape(grad_nb[:, :, :, :, t, :], [-1, h, w, c]),
                               [[0, 0], [ky, 2 * r - ky], [kx, 2 * r - kx], [0, 0]])
                grad_xp = piece if grad_xp is None else grad_xp + piece
            grad_x = grad_xp[:, r:r + h, r:r + w, :]
            return grad_x, grad_w

        return out, grad

    return reassemble(x, weights)


def _check(channels, kernel_size, group, scale):
    if kernel_size < 1 or kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if group < 1 or channels % group:
        raise ValueError(f"channels ({channels}) must be divisible by the "
                         f"group count ({group})")
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")


def carafe(x, kernels, kernel_size, group, scale):
    """CARAFE reassembly (the official ``carafe`` op), NHWC.

    ``out[n, Y, X, c] = sum_{ky, kx} x[n, Y//s + ky - r, X//s + kx - r, c]
    * kernels[n, Y, X, g*k**2 + ky*k + kx]`` with ``r = (k-1)/2`` and
    ``g = c // (C/G)`` (contiguous channel blocks). The window is centred on
    the floor low-res pixel; taps outside the map read 0 and the kernel is
    not renormalised (borders are attenuated).

    Args:
        x: ``(N, H, W, C)`` features.
        kernels: ``(N, s*H, s*W, G * k**2)`` normalised kernels (see
            ``normalize_kernels``).
        kernel_size: ``k`` (odd), group: ``G``, scale: ``s`` (int).
    Returns:
        ``(N, s*H, s*W, C)``.
    """
    x = tf.convert_to_tensor(x)
    kernels = tf.convert_to_tensor(kernels, dtype=x.dtype)
    channels = x.shape[-1]
    _check(channels, kernel_size, group, scale)
    if kernels.shape[-1] is not None and kernels.shape[-1] != group * kernel_size ** 2:
        raise ValueError(f"kernels have {kernels.shape[-1]} channels, expected "
                         f"G * k**2 = {group * kernel_size ** 2}")
    weights = _lowres_kernels(kernels, kernel_size, group, scale)
    return _reassemble(x, weights, kernel_size, group, scale)


@keras.saving.register_keras_serializable(package="orienmask_tf")
class CARAFE(keras.layers.Layer):
    """CARAFE upsampler: the official mmdetection ``CARAFEPack``, NHWC.

    Implements CARAFE (Wang et al., ICCV 2019) as used for the FPN
    upsampling in maYOLACT (maIoU paper, BMVC 2021; ``FPN_CARAFE`` with
    ``up_kernel=5, up_group=1, encoder_kernel=3, encoder_dilation=1,
    compressed_channels=64, scale_factor=2``):

    1. ``compressed = channel_compressor(x)``: 1x1 conv to
       ``compressed_channels``, with bias.
    2. ``logits = content_encoder(compressed)``: ``ke x ke`` conv, dilation
       ``de``, symmetric padding ``(ke-1)*de/2``, ``k**2 * G * s**2``
       outputs in the torch channel order ``(g*k**2 + t)*s**2 + dy*s + dx``.
    3. ``kernels = normalize_kernels(logits)``: torch pixel shuffle, softmax
       over each group's ``k**2`` taps.
    4. ``out = carafe(x, kernels)``.

    The call computes steps 3-4 without materialising the high-resolution
    kernels (the softmax is taken before the shuffle, which only permutes).

    Weights: the sublayers are named ``channel_compressor`` and
    ``content_encoder``, so the torch keys
    ``<prefix>.channel_compressor.{weight,bias}`` and
    ``<prefix>.content_encoder.{weight,bias}`` load with
    ``weight.transpose(2, 3, 1, 0)`` and no channel permutation.
    Initialisation follows ``CARAFEPack.init_weights``: Glorot (Xavier)
    uniform for the compressor, N(0, 0.001) for the encoder, zero biases.

    Args:
        channels: input (and output) channels ``C``.
        scale_factor: integer upsampling factor ``s``.
        up_kernel: reassembly kernel size ``k`` (odd).
        up_group: kernel groups ``G``; channel ``c`` uses group ``c // (C/G)``.
        encoder_kernel: content-encoder kernel size ``ke``.
        encoder_dilation: content-encoder dilation ``de``; ``(ke-1)*de`` must
            be even.
        compressed_channels: channels after the compressor.

    Shapes:
        input ``(N, H, W, C)`` -> output ``(N, s*H, s*W, C)``.

    ``intermediates(x)`` returns the compressed features, encoder logits,
    normalised high-res kernels and output (for tests and debugging);
    ``kernels(x)`` returns the kernels alone.
    """

    def __init__(self, channels, scale_factor, up_kernel=5, up_group=1,
                 encoder_kernel=3, encoder_dilation=1, compressed_channels=64,
                 **kwargs):
        super().__init__(**kwargs)
        _check(channels, up_kernel, up_group, scale_factor)
        if ((encoder_kernel - 1) * encoder_dilation) % 2:
            raise ValueError("(encoder_kernel - 1) * encoder_dilation must be "
                             "even (symmetric padding keeps the size)")
        self.channels = int(channels)
        self.scale_factor = int(scale_factor)
        self.up_kernel = int(up_kernel)
        self.up_group = int(up_group)
        self.encoder_kernel = int(encoder_kernel)
        self.encoder_dilation = int(encoder_dilation)
        self.compressed_channels = int(compressed_channels)
        self.channel_compressor = keras.layers.Conv2D(
            self.compressed_channels, 1, use_bias=True,
            kernel_initializer=keras.initializers.GlorotUniform(),
            bias_initializer="zeros", dtype=self.dtype_policy,
            name="channel_compressor")
        # Stride 1 and an even total padding: "same" is the symmetric torch pad.
        self.content_encoder = keras.layers.Conv2D(
            self.up_kernel ** 2 * self.up_group * self.scale_factor ** 2,
            self.encoder_kernel, padding="same",
            dilation_rate=self.encoder_dilation, use_bias=True,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            bias_initializer="zeros", dtype=self.dtype_policy,
            name="content_encoder")

    def build(self, input_shape):
        if input_shape[-1] != self.channels:
            raise ValueError(f"CARAFE built for {self.channels} channels, "
                             f"got input shape {input_shape}")
        self.channel_compressor.build(input_shape)
        self.content_encoder.build(
            tuple(input_shape[:-1]) + (self.compressed_channels,))
        self.built = True

    def _logits(self, x):
        compressed = self.channel_compressor(x)
        return compressed, self.content_encoder(compressed)

    def call(self, x):
        _, logits = self._logits(x)
        weights = tf.nn.softmax(
            _lowres_logits(logits, self.up_kernel, self.up_group,
                           self.scale_factor), axis=-1)
        return _reassemble(x, weights, self.up_kernel, self.up_group,
                           self.scale_factor)

    def intermediates(self, x):
        """Dict of ``compressed``, ``encoder_out`` (raw logits, torch channel
        order), ``kernels`` ``(N, sH, sW, G*k**2)`` and ``out`` (via the
        public ``normalize_kernels`` and ``carafe`` functions)."""
        x = tf.convert_to_tensor(x, dtype=self.compute_dtype)
        compressed, logits = self._logits(x)
        kernels = normalize_kernels(logits, self.up_kernel, self.up_group,
                                    self.scale_factor)
        out = carafe(x, kernels, self.up_kernel, self.up_group,
                     self.scale_factor)
        return {"compressed": compressed, "encoder_out": logits,
                "kernels": kernels, "out": out}

    def kernels(self, x):
        """Normalised reassembly kernels ``(N, s*H, s*W, G*k**2)``."""
        x = tf.convert_to_tensor(x, dtype=self.compute_dtype)
        _, logits = self._logits(x)
        return normalize_kernels(logits, self.up_kernel, self.up_group,
                                 self.scale_factor)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        s = self.scale_factor
        return (n, None if h is None else h * s, None if w is None else w * s, c)

    def get_config(self):
        config = super().get_config()
        config.update(
            channels=self.channels, scale_factor=self.scale_factor,
            up_kernel=self.up_kernel, up_group=self.up_group,
            encoder_kernel=self.encoder_kernel,
            encoder_dilation=self.encoder_dilation,
            compressed_channels=self.compressed_channels)
        return config
