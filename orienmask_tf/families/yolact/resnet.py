"""ResNet-50 in the torchvision / mmdet ``style='pytorch'`` layout (YOLACT).

Layer names are the PyTorch module paths of mmdet's ``ResNet`` (and of
torchvision's ``resnet50`` without ``fc``): ``conv1``, ``bn1``,
``layer{1..4}.{b}.conv{1,2,3}``, ``layer{1..4}.{b}.bn{1,2,3}``,
``layer{1..4}.0.downsample.{0,1}``. The stride of a stage sits on the 3x3
conv (``pytorch`` style, ResNet v1.5) and every padding is symmetric like
torch's (explicit ``ZeroPadding2D`` before ``valid`` strided convs).

With ``stage_with_dcn`` (maYOLACT: ``(False, True, True, True)``,
``deformable_groups=4``) the ``conv2`` of every bottleneck of those stages
is a ``DeformConv2D`` (mmdet ``ModulatedDeformConvPack``, no bias, stride 2
in the first block of layers 2-4) with the same layer name, so the mmdet
keys ``layerX.Y.conv2.weight`` and ``layerX.Y.conv2.conv_offset.{weight,
bias}`` map by name. ``DeformConv2D`` needs a static input size.
"""

import keras

from orienmask_tf.layers.conv_bn import torch_kernel_initializer
from orienmask_tf.layers.deform_conv import DeformConv2D
from orienmask_tf.layers.torch_layers import batch_norm
from orienmask_tf.layers.torch_layers import torch_conv

RESNET50_BLOCKS = (3, 4, 6, 3)
EXPANSION = 4
NO_DCN = (False, False, False, False)
MAYOLACT_DCN = (False, True, True, True)


def check_dcn(stage_with_dcn, deformable_groups, base_channels,
              num_stages=4, image_shape=None):
    """Raise ``ValueError`` for DCN settings the backbone cannot build."""
    stage_with_dcn = tuple(stage_with_dcn)
    if len(stage_with_dcn) != num_stages or not all(
            isinstance(v, (bool, int)) for v in stage_with_dcn):
        raise ValueError(f"stage_with_dcn must be {num_stages} booleans (one "
                         f"per stage), got {list(stage_with_dcn)!r}")
    groups = int(deformable_groups)
    if groups < 1:
        raise ValueError(f"deformable_groups must be >= 1, got {groups}")
    for stage, dcn in enumerate(stage_with_dcn):
        planes = int(base_channels) * 2 ** stage
        if dcn and planes % groups:
            raise ValueError(
                f"deformable_groups {groups} does not divide the {planes} "
                f"channels of layer{stage + 1}'s DCN")
    if any(stage_with_dcn) and image_shape is not None and (
            image_shape[0] is None or image_shape[1] is None):
        raise ValueError(
            "a backbone with DCN (stage_with_dcn) needs a static image_shape "
            f"(height, width, 3), got {tuple(image_shape)!r}")


def bottleneck(x, planes, strides, name, synchronized_bn=False,
               deformable_groups=0):
    """torchvision ``Bottleneck`` (stride on ``conv2``), ``relu(f(x) + id)``.

    ``deformable_groups`` > 0: ``conv2`` is a DCNv2 (``DeformConv2D``, no
    bias) with that many deformable groups; 0: a plain conv.
    """
    out_channels = planes * EXPANSION
    y = torch_conv(x, planes, 1, use_bias=False, name=f"{name}.conv1")
    y = batch_norm(y, f"{name}.bn1", synchronized_bn)
    y = keras.layers.ReLU(name=f"{name}.relu1")(y)
    if deformable_groups:
        y = DeformConv2D(planes, 3, strides=strides, padding=1,
                         deformable_groups=deformable_groups, use_bias=False,
                         kernel_initializer=torch_kernel_initializer(),
                         name=f"{name}.conv2")(y)
    else:
        y = torch_conv(y, planes, 3, strides=strides, use_bias=False,
                       name=f"{name}.conv2")
    y = batch_norm(y, f"{name}.bn2", synchronized_bn)
    y = keras.layers.ReLU(name=f"{name}.relu2")(y)
    y = torch_conv(y, out_channels, 1, use_bias=False, name=f"{name}.conv3")
    y = batch_norm(y, f"{name}.bn3", synchronized_bn)
    if strides != 1 or x.shape[-1] != out_channels:
        x = keras.layers.Conv2D(
            out_channels, 1, strides=strides, use_bias=False,
            kernel_initializer=torch_kernel_initializer(),
            name=f"{name}.downsample.0")(x)
        x = batch_norm(x, f"{name}.downsample.1", synchronized_bn)
    y = keras.layers.Add(name=f"{name}.add")([y, x])
    return keras.layers.ReLU(name=f"{name}.relu3")(y)


@keras.saving.register_keras_serializable(package="orienmask_tf")
class ResNetBackbone(keras.Model):
    """ResNet (bottleneck) backbone with outputs ``{"C2", "C3", "C4", "C5"}``.

    Args:
        stem_channels: channels of ``conv1`` (64 in ResNet-50).
        base_channels: planes of ``layer1`` (64); stage ``i`` has
            ``base_channels * 2**i`` planes and ``4x`` that many outputs.
        stackwise_num_blocks: bottlenecks per stage (3, 4, 6, 3 = ResNet-50).
        image_shape: ``(height, width, 3)``, any size (static when a
            stage has DCN).
        synchronized_bn: ``False``, ``True`` (cross-replica BatchNorm
            statistics) or ``"split_invariant"`` (``layers.batch_norm``).
        stage_with_dcn: 4 booleans, one per stage: DCNv2 ``conv2`` in
            every bottleneck of that stage (mmdet ``stage_with_dcn``;
            maYOLACT ``(False, True, True, True)``).
        deformable_groups: DCN offset groups (maYOLACT 4); must divide the
            planes of every DCN stage.

    Input is the normalised RGB image (``(x - mean) / std``), NHWC. ``C2`` is
    stride 4 (after the max-pool and ``layer1``), ``C5`` stride 32; sizes
    follow ``floor((n + 2p - k) / s) + 1`` (550 -> 138, 69, 35, 18).
    With the defaults there are 23,508,032 trainable parameters (maYOLACT's
    DCN stages: 26,993,084).
    """

    def __init__(self, stem_channels=64, base_channels=64,
                 stackwise_num_blocks=RESNET50_BLOCKS,
                 image_shape=(None, None, 3), synchronized_bn=False,
                 stage_with_dcn=NO_DCN, deformable_groups=1, **kwargs):
        check_dcn(stage_with_dcn, deformable_groups, base_channels,
                  len(stackwise_num_blocks), image_shape)
        stage_with_dcn = tuple(bool(v) for v in stage_with_dcn)
        images = keras.Input(shape=image_shape, name="images")
        x = torch_conv(images, stem_channels, 7, strides=2, use_bias=False,
                       name="conv1")
        x = batch_norm(x, "bn1", synchronized_bn)
        x = keras.layers.ReLU(name="relu")(x)
        # Zero padding equals torch's -inf padding on post-ReLU input.
        x = keras.layers.ZeroPadding2D(1, name="maxpool.pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
        features = {}
        for stage, num_blocks in enumerate(stackwise_num_blocks):
            planes = base_channels * 2 ** stage
            for block in range(num_blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = bottleneck(
                    x, planes, strides, name=f"layer{stage + 1}.{block}",
                    synchronized_bn=synchronized_bn,
                    deformable_groups=(int(deformable_groups)
                                       if stage_with_dcn[stage] else 0))
            features[f"C{stage + 2}"] = x
        super().__init__(inputs=images, outputs=features, **kwargs)
        self.stem_channels = int(stem_channels)
        self.base_channels = int(base_channels)
        self.stackwise_num_blocks = tuple(stackwise_num_blocks)
        self.image_shape = tuple(image_shape)
        self.synchronized_bn = synchronized_bn
        self.stage_with_dcn = stage_with_dcn
        self.deformable_groups = int(deformable_groups)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "stem_channels": self.stem_channels,
            "base_channels": self.base_channels,
            "stackwise_num_blocks": list(self.stackwise_num_blocks),
            "image_shape": list(self.image_shape),
            "synchronized_bn": self.synchronized_bn,
            "stage_with_dcn": list(self.stage_with_dcn),
            "deformable_groups": self.deformable_groups,
        }
