# SPDX-License-Identifier: Apache-2.0
"""Modulated deformable convolution (DCNv2) in plain TensorFlow ops, NHWC.

``modulated_deform_conv2d`` is the functional op and ``DeformConv2D`` the
Keras layer equal to the official ``ModulatedDeformConvPack`` of the
maYOLACT code (an mmdetection 2.x fork; semantics recorded in
``tests/fixtures/reference/mayolact/README.md`` §1).

Only ops that TFLite (builtins) and ONNX have are used: pad, strided slice,
pack, reshape, transpose, floor, compare, cast, min/max, gather,
mul/add/reduce-sum and a matmul (a conv under XLA). There is no ``tf.image``
op and no custom kernel, so the op compiles under XLA and exports to
SavedModel, TFLite (builtin ops only) and ONNX (tf2onnx).

How it is computed (no loop over pixels, taps or groups):

1. The input is zero-padded by one pixel on every side and the four
   bilinear neighbours ``(y, x), (y, x+1), (y+1, x), (y+1, x+1)`` of every
   padded pixel are stacked, per deformable group, into a corner table
   ``(N·(H+1)·(W+1)·G, 4, C/G)``. One gather of a table row fetches all four
   corners of a sampling point for the ``C/G`` channels of its group.
2. A sampling point inside ``(−1, H) × (−1, W)`` has its corners inside the
   padded image, so its row is simply the clipped ``floor`` position;
   points outside get a zero weight. The weights
   ``(1−ly)(1−lx), (1−ly)lx, ly(1−lx), ly·lx`` times the mask (times the
   inside-indicator) combine the corners into im2col columns
   ``(N, Ho·Wo, G·K, C/G)``, ordered ``[g][k][c]``.
3. One contraction with the kernel, its rows permuted to that order: a
   ``(N·Ho·Wo, G·K·C/G) @ (G·K·C/G, Cout)`` matmul, or, while tracing for
   XLA, the same sum written as a ``1 × G·K`` 'valid' convolution, which
   XLA compiles ~2x faster on CPU (it keeps the columns 3-D, so the fused
   gather loop vectorises over ``C/G``).

Every tensor has rank ≤ 5 (TFLite kernel limits). Gradients come from
autodiff and are the official ones: ``floor`` has a zero gradient, so at an
integer coordinate the offset gradient is the one-sided upper difference,
and the inside-indicator makes it exactly 0 wherever the point is ``≤ −1``
or ``≥ H`` (``W``), including exactly −1 (where torchvision differs).
"""

import keras
import numpy as np
import tensorflow as tf


def _pair(value, name):
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {value!r}")
    return value


def deform_output_size(size, kernel_size, stride, padding, dilation):
    """``(size + 2p − (d(k−1)+1)) // s + 1`` (PyTorch's conv output size)."""
    span = dilation * (kernel_size - 1) + 1
    return (size + 2 * padding - span) // stride + 1


def modulated_deform_conv2d(x, offset, mask, kernel, bias=None, strides=1,
                            padding=1, dilation=1, groups=1,
                            deformable_groups=1, implementation=None):
    """Modulated deformable convolution (DCNv2), official mmdet semantics.

    Args:
        x: ``(N, H, W, C)`` input. Static ``H``, ``W`` and ``C`` are needed.
        offset: ``(N, Ho, Wo, 2·G·K)`` offsets in pixels, channel layout
            ``[g][k][(Δy, Δx)]`` (the official NCHW channel order, moved
            last), ``K = kh·kw``, tap ``k = i·kw + j``.
        mask: ``(N, Ho, Wo, G·K)`` modulation, channel ``g·K + k``. It
            multiplies the sampled value as it is: no sigmoid is applied here.
        kernel: ``(kh, kw, C/groups, Cout)``, the torch weight transposed
            ``(2, 3, 1, 0)``.
        bias: optional ``(Cout,)``.
        strides, padding, dilation: ints or ``(h, w)`` pairs. ``padding`` is
            PyTorch's explicit symmetric zero padding.
        groups: conv groups (contiguous blocks of ``C`` and ``Cout``).
        deformable_groups: ``G``; input channel ``c`` uses the offsets of
            group ``c // (C/G)``.
        implementation: how the final contraction is written (same maths):
            ``"matmul"`` (one ``(P, G·K·C/G) @ (G·K·C/G, Cout)`` matmul) or
            ``"conv"`` (the same as a ``1 × G·K`` 'valid' conv, which XLA
            compiles ~2x faster on CPU). ``None`` (default): ``"conv"``
            while tracing under XLA, else ``"matmul"`` (fast in plain TF,
            and the form exported to TFLite / ONNX). Conv groups > 1 always
            use a batched matmul.

    Returns:
        ``(N, Ho, Wo, Cout)`` with ``Ho = (H + 2p − (d(kh−1)+1)) // s + 1``.

    Sampling point of tap ``(i, j)`` at output ``(ho, wo)``:
    ``py = ho·s − p + i·d + Δy``, ``px = wo·s − p + j·d + Δx`` (pixel
    indices, no half-pixel shift). The sample is bilinear on the zero-padded
    image and 0 when ``py ≤ −1``, ``py ≥ H``, ``px ≤ −1`` or ``px ≥ W``.
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    offset = tf.convert_to_tensor(offset)
    mask = tf.convert_to_tensor(mask)
    kernel = tf.convert_to_tensor(kernel, dtype)
    kh, kw, cin_per_group, cout = (int(d) for d in kernel.shape)
    sh, sw = _pair(strides, "strides")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    _, height, width, channels = x.shape
    if height is None or width is None or channels is None:
        raise ValueError(f"modulated_deform_conv2d needs static H, W, C; "
                         f"got input shape {x.shape}")
    num_taps = kh * kw
    dgroups = int(deformable_groups)
    if channels % dgroups or channels % groups or cout % groups:
        raise ValueError(
            f"channels {channels} / filters {cout} are not divisible by "
            f"deformable_groups {dgroups} / groups {groups}")
    if cin_per_group * groups != channels:
        raise ValueError(f"kernel {kernel.shape} does not fit {channels} "
                         f"input channels with groups={groups}")
    out_h = deform_output_size(height, kh, sh, ph, dh)
    out_w = deform_output_size(width, kw, sw, pw, dw)
    cg = channels // dgroups
    batch = tf.shape(x)[0]
    groups = int(groups)

    # Shapes stay at rank <= 5 (TFLite kernels): pixels P = Ho·Wo and the
    # G·K sampling points of a pixel are flat axes, ordered [g][k] like the
    # offset and mask channels.
    pixels, points = out_h * out_w, dgroups * num_taps

    # --- Sampling points (N, P, G·K, (y, x)), float32, computed as the
    # official op does: float(ho·s − p + i·d) + Δ.
    offset = tf.reshape(tf.cast(offset, tf.float32), [-1, pixels, points, 2])
    tap_i = np.tile(np.repeat(np.arange(kh), kw), dgroups)
    tap_j = np.tile(np.tile(np.arange(kw), kh), dgroups)
    out_y, out_x = np.divmod(np.arange(pixels), out_w)
    base = np.stack([out_y[:, None] * sh - ph + tap_i * dh,
                     out_x[:, None] * sw - pw + tap_j * dw], axis=-1)
    point = base.astype(np.float32) + offset
    size = np.array([height, width], np.float32)
    floor = tf.floor(point)  # zero gradient: one-sided difference at integers
    frac = point - floor
    # A point counts only inside (−1, H) × (−1, W). There its four corners
    # lie in the image zero-padded by one pixel, at padded row / column
    # y0 + 1 / x0 + 1 (the corner table's). Clipping moves only points that
    # are outside, and those get a zero weight; the indicator has no
    # gradient, so their offset gradient is exactly 0, at −1 too.
    inside = tf.cast((point > -1.0) & (point < size), tf.float32)
    inside = inside[..., 0] * inside[..., 1]
    corner = tf.cast(tf.clip_by_value(floor + 1.0, 0.0, size), tf.int32)
    # Row of the corner table: ((n·(H+1) + y0+1)·(W+1) + x0+1)·G + g.
    index = (tf.reduce_sum(corner * np.array([(width + 1) * dgroups, dgroups],
                                             np.int32), axis=-1)
             + np.repeat(np.arange(dgroups, dtype=np.int32), num_taps)
             + tf.range(batch, dtype=tf.int32)[:, None, None]
             * ((height + 1) * (width + 1) * dgroups))

    # Bilinear weights of the corners (y0,x0), (y0,x0+1), (y0+1,x0),
    # (y0+1,x0+1) times mask times indicator: (N, P, G·K, 4).
    modulation = tf.reshape(tf.cast(mask, tf.float32),
                            [-1, pixels, points]) * inside
    high_y, high_x = frac[..., 0], frac[..., 1]
    low_y, low_x = 1.0 - high_y, 1.0 - high_x
    weights = tf.stack([low_y * low_x, low_y * high_x,
                        high_y * low_x, high_y * high_x], axis=-1)
    weights = tf.cast(weights * modulation[..., None], dtype)

    # --- Corner table (N·(H+1)·(W+1)·G, 4, C/G): row (n, y, x, g) holds the
    # four neighbours (y, x), (y, x+1), (y+1, x), (y+1, x+1) of the padded
    # image, so one gather fetches every corner of a point.
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    table = tf.stack(
        [tf.reshape(padded[:, dy:dy + height + 1, dx:dx + width + 1, :],
                    [-1, cg]) for dy in (0, 1) for dx in (0, 1)], axis=1)

    sampled = tf.gather(table, index)  # (N, P, G·K, 4, C/G)
    sampled = tf.reduce_sum(sampled * weights[..., None], axis=3)
    # (N, P, G·K, C/G): im2col columns ordered [g][k][c].

    if implementation is None:
        implementation = "conv" if _in_xla_context() else "matmul"
    if implementation not in ("matmul", "conv"):
        raise ValueError(f"implementation must be None, 'matmul' or 'conv', "
                         f"got {implementation!r}")
    if groups == 1:
        # Kernel rows reordered like the columns: [k][g][c] -> [g][k][c].
        w = tf.reshape(kernel, [num_taps, dgroups, cg, cout])
        w = tf.transpose(w, [1, 0, 2, 3])
        if implementation == "conv":
            # The same contraction as a 1 × G·K 'valid' convolution. XLA
            # then keeps the sampled tensor [.., G·K, C/G], and its fused
            # gather loop vectorises over C/G; for the 2-D [N·P, G·K·C/G]
            # operand of the matmul it is ~4x slower on CPU.
            out = _contract_as_conv(sampled,
                                    tf.reshape(w, [points, cg, cout]))
        else:
            out = tf.matmul(tf.reshape(sampled, [-1, points * cg]),
                            tf.reshape(w, [points * cg, cout]))
    else:
        # Conv groups: columns to [k][c], c split into contiguous groups,
        # then one batched matmul.
        cpg, opg = channels // groups, cout // groups
        cols = tf.reshape(sampled, [-1, dgroups, num_taps, cg])
        cols = tf.reshape(tf.transpose(cols, [0, 2, 1, 3]),
                          [-1, num_taps, groups, cpg])
        cols = tf.reshape(tf.transpose(cols, [2, 0, 1, 3]),
                          [groups, -1, num_taps * cpg])
        w = tf.reshape(kernel, [num_taps, cpg, groups, opg])
        w = tf.reshape(tf.transpose(w, [2, 0, 1, 3]),
                       [groups, num_taps * cpg, opg])
        out = tf.matmul(cols, w)  # (groups, N·P, opg)
        out = tf.reshape(tf.transpose(out, [1, 0, 2]), [-1, cout])
    if bias is not None:
        out = out + tf.cast(bias, dtype)
    return tf.reshape(out, [-1, out_h, out_w, cout])


@tf.custom_gradient
def _contract_as_conv(cols, kernel):
    """``Σ_{t,c} cols[n, p, t, c] · kernel[t, c, o]`` as a ``1 × T`` 'valid'
    conv, ``(N, P, T, C) → (N, P, 1, O)``. The gradient is the same two
    matmuls as the matmul form's: XLA's CPU backprop of this conv shape is
    very slow (it made a DCN training step ~5x slower)."""
    points, channels, filters = (int(d) for d in kernel.shape)
    out = tf.nn.conv2d(cols, kernel[None], 1, "VALID")

    def grad(upstream):
        upstream = tf.reshape(upstream, [-1, filters])
        flat_kernel = tf.reshape(kernel, [points * channels, filters])
        grad_cols = tf.matmul(upstream, flat_kernel, transpose_b=True)
        grad_kernel = tf.matmul(
            tf.reshape(cols, [-1, points * channels]), upstream,
            transpose_a=True)
        return (tf.reshape(grad_cols, tf.shape(cols)),
                tf.reshape(grad_kernel, kernel.shape))

    return out, grad


def _in_xla_context():
    """True while tracing for XLA (``tf.function(jit_compile=True)``, Keras
    ``jit_compile=True``): the check TensorFlow's own ``cond`` and
    ``while_loop`` make. It only picks the faster of two formulations of the
    same sum, so a wrong answer costs speed, never correctness."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - internal module moved
        return False
    try:
        return control_flow_util.GraphOrParentsInXlaContext(
            tf.compat.v1.get_default_graph())
    except AttributeError:  # pragma: no cover
        return False


@keras.saving.register_keras_serializable(package="orienmask_tf")
class DeformConv2D(keras.layers.Layer):
    """Modulated deformable convolution with its own offset conv (DCNv2).

    DCNv2 (Zhu et al., "Deformable ConvNets v2: More Deformable, Better
    Results", CVPR 2019) as the official ``ModulatedDeformConvPack`` (the
    ``DCNv2`` conv type of mmdetection) that maYOLACT (Oksuz et al., the
    maIoU paper, "Mask-aware IoU for Anchor Assignment in Real-time Instance
    Segmentation", BMVC 2021) puts on ``conv2`` of every Bottleneck of
    ResNet-50 layer2..layer4 (``deformable_groups=4``).

    Forward: ``o = conv_offset(x)`` (a 3×3 conv with ``3·G·K`` outputs, same
    stride / padding / dilation, with bias, zero-initialised);
    ``offset = o[..., :2·G·K]`` (channel layout ``[g][k][(Δy, Δx)]``),
    ``mask = sigmoid(o[..., 2·G·K:])``; then
    ``modulated_deform_conv2d(x, offset, mask, kernel, bias, ...)``. At
    initialisation Δ = 0 and mask = 0.5, so the layer is 0.5 × the plain
    conv with the same kernel.

    Args:
        filters: output channels ``Cout``.
        kernel_size: int or ``(kh, kw)``; 3 in maYOLACT.
        strides: int or pair. The offset conv uses the same.
        padding: int or pair: PyTorch's explicit symmetric zero padding (not
            ``"same"``/``"valid"``).
        dilation: int or pair. Keras' Conv2D (the offset conv) rejects
            ``strides > 1`` together with ``dilation > 1``.
        groups: conv groups of the main conv (the offset conv has none).
        deformable_groups: ``G``; contiguous blocks of ``C/G`` input channels
            share one set of offsets and masks.
        use_bias: main-conv bias. The official Pack defaults to True;
            maYOLACT's backbone builds it with ``bias=False``.
        kernel_initializer: main kernel; the default is uniform
            ``±1/sqrt(fan_in)`` (PyTorch-style).
        bias_initializer, kernel_regularizer, bias_regularizer,
        kernel_constraint, bias_constraint: for the main kernel / bias.

    Shapes: ``(N, H, W, C)`` → ``(N, Ho, Wo, filters)`` with
    ``Ho = (H + 2p − (d(kh−1)+1)) // s + 1``; ``H``, ``W`` and ``C`` must be
    static.

    Weights, named for a one-to-one checkpoint converter (transpose every
    4-D torch weight ``(2, 3, 1, 0)``):

    * ``kernel`` ``(kh, kw, C/groups, filters)`` ← ``<prefix>.weight``;
    * ``bias`` ``(filters,)`` ← ``<prefix>.bias`` (if ``use_bias``);
    * ``conv_offset.kernel`` ``(kh, kw, C, 3·G·K)`` ←
      ``<prefix>.conv_offset.weight``;
    * ``conv_offset.bias`` ``(3·G·K,)`` ← ``<prefix>.conv_offset.bias``.

    ``offset_and_mask(x)`` returns the ``(offset, mask)`` that ``call`` hands
    to the op (NHWC, mask after the sigmoid).
    """

    def __init__(self, filters, kernel_size=3, strides=1, padding=1,
                 dilation=1, groups=1, deformable_groups=1, use_bias=True,
                 kernel_initializer=None, bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = int(groups)
        self.deformable_groups = int(deformable_groups)
        self.use_bias = bool(use_bias)
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.VarianceScaling(
                scale=1.0 / 3.0, mode="fan_in", distribution="uniform")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        if self.filters % self.groups:
            raise ValueError(f"filters {self.filters} not divisible by "
                             f"groups {self.groups}")
        self.num_taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = keras.layers.Conv2D(
            3 * self.deformable_groups * self.num_taps, self.kernel_size,
            strides=self.strides, padding="valid",
            dilation_rate=self.dilation, use_bias=True,
            kernel_initializer="zeros", bias_initializer="zeros",
            dtype=self.dtype_policy, name="conv_offset")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("DeformConv2D needs a static channel count")
        if channels % self.groups or channels % self.deformable_groups:
            raise ValueError(
                f"input channels {channels} not divisible by groups "
                f"{self.groups} / deformable_groups {self.deformable_groups}")
        kh, kw = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel", shape=(kh, kw, channels // self.groups,
                                  self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint)
        else:
            self.bias = None
        padded = list(input_shape)
        for axis, pad in ((1, self.padding[0]), (2, self.padding[1])):
            if padded[axis] is not None:
                padded[axis] += 2 * pad
        self.conv_offset.build(tuple(padded))

    def offset_and_mask(self, inputs):
        """``offset (N, Ho, Wo, 2GK)``, ``mask (N, Ho, Wo, GK)`` (sigmoid)."""
        ph, pw = self.padding
        padded = tf.pad(inputs, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
        out = self.conv_offset(padded)
        split = 2 * self.deformable_groups * self.num_taps
        return out[..., :split], tf.sigmoid(out[..., split:])

    def call(self, inputs):
        offset, mask = self.offset_and_mask(inputs)
        return modulated_deform_conv2d(
            inputs, offset, mask, self.kernel, self.bias,
            strides=self.strides, padding=self.padding,
            dilation=self.dilation, groups=self.groups,
            deformable_groups=self.deformable_groups)

    def compute_output_shape(self, input_shape):
        sizes = []
        for axis in (0, 1):
            size = input_shape[1 + axis]
            sizes.append(None if size is None else deform_output_size(
                size, self.kernel_size[axis], self.strides[axis],
                self.padding[axis], self.dilation[axis]))
        return (input_shape[0], sizes[0], sizes[1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            deformable_groups=self.deformable_groups,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(
                self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(
                self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(
                self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(
                self.bias_regularizer),
            kernel_constraint=keras.constraints.serialize(
                self.kernel_constraint),
            bias_constraint=keras.constraints.serialize(self.bias_constraint),
        )
        return config
