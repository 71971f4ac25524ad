import keras
import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.families.orienmask.loss import LOSS_ITEM_NAMES
from orienmask_tf.families.orienmask.loss import OrienMaskLoss
from orienmask_tf.families.orienmask.loss import OrientationLoss
from orienmask_tf.families.orienmask.loss import YoloDetectionLoss
from orienmask_tf.families.orienmask.loss import decode_grid_boxes
from orienmask_tf.families.orienmask.loss import split_box_prediction
from orienmask_tf.families.orienmask.loss import upsample_orientation
from tests.targets.fixture_utils import LOSS_CASES
from tests.targets.fixture_utils import batched_targets
from tests.targets.fixture_utils import encoder_for
from tests.targets.fixture_utils import load_case
from tests.targets.fixture_utils import nhwc_predictions
from tests.testing import reference_path

NAMES = ("s32", "s16", "s8")


def _loss_kwargs(z):
    return dict(image_size=tuple(int(v) for v in z["image_size"]),
                anchors=z["anchors"], num_classes=int(z["num_classes"]),
                anchor_mask=z["anchor_mask"].tolist(),
                obj_ignore_threshold=float(z["obj_ignore_threshold"]),
                weights=z["loss_weight"].tolist(),
                scales_weight=z["scales_weight"].tolist())


@pytest.mark.parametrize("case", LOSS_CASES)
def test_items_total_and_gradients_match_official(case):
    z = load_case(case)
    y_true = batched_targets(encoder_for(z), z)
    loss = OrienMaskLoss(**_loss_kwargs(z))
    pred = {k: tf.constant(v) for k, v in nhwc_predictions(z).items()}
    with tf.GradientTape() as tape:
        tape.watch(pred)
        result = loss.loss_items(y_true, pred)
    grads = tape.gradient(result["loss_total"], pred)
    for s, name in enumerate(NAMES):
        items = [float(result[name][k]) for k in LOSS_ITEM_NAMES]
        np.testing.assert_allclose(items, z[f"loss_items_s{s}"], rtol=1e-4,
                                   atol=1e-6)
        np.testing.assert_allclose(float(result[f"loss_sum_{name}"]),
                                   float(z[f"loss_sum_s{s}"]), rtol=1e-4)
        for key, ref in ((f"box_{name}", f"grad_pred_bbox_s{s}"),
                         (f"orien_{name}", f"grad_pred_orien_s{s}")):
            np.testing.assert_allclose(
                grads[key].numpy(), z[ref].transpose(0, 2, 3, 1), rtol=1e-4,
                atol=1e-6, err_msg=key)
    np.testing.assert_allclose(float(result["loss_total"]),
                               float(z["loss_total"]), rtol=1e-4)
    # The two keras.losses.Loss terms add up to the official total.
    terms = (YoloDetectionLoss(**_loss_kwargs(z))(y_true, pred)
             + OrientationLoss(**_loss_kwargs(z))(y_true, pred))
    np.testing.assert_allclose(float(terms), float(z["loss_total"]),
                               rtol=1e-4)


@pytest.mark.parametrize("case", LOSS_CASES)
def test_prediction_dependent_targets_match_official(case):
    z = load_case(case)
    y_true = batched_targets(encoder_for(z), z)
    loss = OrienMaskLoss(**_loss_kwargs(z))
    batch = z["pred_bbox_s0"].shape[0]
    for s, name in enumerate(NAMES):
        raw = split_box_prediction(
            tf.constant(z[f"pred_bbox_s{s}"].transpose(0, 2, 3, 1)), 3)
        boxes = decode_grid_boxes(raw, loss.grid_anchors(s)).numpy()
        np.testing.assert_allclose(boxes.reshape(batch, -1, 4),
                                   z[f"pred_boxes_s{s}"], rtol=1e-5,
                                   atol=1e-5)
        neg, tiou = loss.prediction_targets(y_true, raw, s)
        np.testing.assert_array_equal(neg.numpy(), z[f"bbox_neg_mask_s{s}"])
        np.testing.assert_allclose(tiou.numpy(), z[f"tiou_s{s}"], atol=1e-5)


def test_upsampling_matches_official():
    z = np.load(reference_path("orienmask", "upsample_check.npz"))
    x = z["input"].transpose(0, 2, 3, 1)  # (1, 6, 10, 2)
    up = upsample_orientation(tf.constant(x), (24, 40), 1).numpy()
    np.testing.assert_allclose(up[:, 0], z["output"],
                               rtol=1e-5, atol=1e-6)


def test_loss_under_tf_function_equals_eager():
    z = load_case(0)
    y_true = batched_targets(encoder_for(z), z)
    loss = OrienMaskLoss(**_loss_kwargs(z))
    pred = nhwc_predictions(z)
    eager = float(loss(y_true, pred))
    traced = float(tf.function(loss)(y_true, pred))
    np.testing.assert_allclose(traced, eager, rtol=1e-6)
    np.testing.assert_allclose(eager, float(z["loss_total"]), rtol=1e-4)


def test_empty_batch_is_finite_and_has_no_orientation_loss():
    z = load_case(0)
    encoder = encoder_for(z)
    gt = {"boxes": np.zeros((4, 4), np.float32),
          "classes": np.full((4,), -1, np.int32),
          "masks": np.zeros((4, 96, 160), bool), "num_instances": 0}
    y_true = {k: v[None] for k, v in encoder(gt).items()}
    pred = {k: tf.constant(v[:1]) for k, v in nhwc_predictions(z).items()}
    loss = OrienMaskLoss(**_loss_kwargs(z))
    with tf.GradientTape() as tape:
        tape.watch(pred)
        result = loss.loss_items(y_true, pred)
    grads = tape.gradient(result["loss_total"], pred)
    for name in NAMES:
        for item in LOSS_ITEM_NAMES:
            value = float(result[name][item])
            assert np.isfinite(value)
            if item != "loss_obj_neg":
                assert value == 0.0, (name, item)
        assert np.all(grads[f"orien_{name}"].numpy() == 0)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads.values())


def test_zero_area_box_and_extreme_logits_have_no_nan():
    z = load_case(0)
    encoder = encoder_for(z)
    gt = {"boxes": np.array([[0.5, 0.5, 0.0, 0.0], [0.3, 0.4, 0.2, 0.3]],
                            np.float32),
          "classes": np.array([1, 2], np.int32),
          "masks": np.zeros((2, 96, 160), bool), "num_instances": 2}
    gt["masks"][1, 25:50, 30:65] = True
    y_true = {k: v[None] for k, v in encoder(gt).items()}
    pred = {k: tf.constant(np.clip(v[:1] * 40, -80, 80))
            for k, v in nhwc_predictions(z).items()}
    loss = OrienMaskLoss(**_loss_kwargs(z))
    with tf.GradientTape() as tape:
        tape.watch(pred)
        total = loss.loss_items(y_true, pred)["loss_total"]
    assert np.isfinite(float(total))
    for g in tape.gradient(total, pred).values():
        assert np.all(np.isfinite(g.numpy()))


def test_serialization_round_trip():
    z = load_case(0)
    loss = OrientationLoss(**_loss_kwargs(z))
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, OrientationLoss)
    assert restored.items == loss.items
    assert restored.get_config() == loss.get_config()


def test_float16_targets_from_tf_data_give_close_total():
    z = load_case(2)
    encoder = encoder_for(z, orien_dtype="float16")
    from tests.targets.fixture_utils import padded_examples

    examples = padded_examples(z)
    ds = tf.data.Dataset.from_tensor_slices(
        {k: np.stack([e[k] for e in examples]) for k in examples[0]})
    y_true = next(iter(ds.map(encoder).batch(len(examples))))
    assert y_true["orien_targets_s8"].dtype == tf.float16
    loss = OrienMaskLoss(**_loss_kwargs(z))
    total = float(loss(y_true, nhwc_predictions(z)))
    np.testing.assert_allclose(total, float(z["loss_total"]), rtol=1e-3)


def test_float64_predictions_give_a_float64_loss():
    """A float64 run stays float64 (the official trajectory comparison,
    tests/training/test_official_trajectory.py): items, total and gradients
    in float64, equal to the float32 loss to float32 rounding but not
    rounded to it; mixed-precision float16 outputs are computed in
    float32."""
    z = load_case(0)
    y_true = batched_targets(encoder_for(z), z)
    loss = OrienMaskLoss(**_loss_kwargs(z))
    pred32 = {k: tf.constant(v) for k, v in nhwc_predictions(z).items()}
    pred64 = {k: tf.cast(v, tf.float64) for k, v in pred32.items()}
    with tf.GradientTape() as tape:
        tape.watch(pred64)
        result = loss.loss_items(y_true, pred64)
    grads = tape.gradient(result["loss_total"], pred64)
    assert result["loss_total"].dtype == tf.float64
    assert all(result[n][k].dtype == tf.float64
               for n in NAMES for k in LOSS_ITEM_NAMES)
    assert all(g.dtype == tf.float64 for g in grads.values())
    total64 = float(result["loss_total"])
    total32 = float(loss.loss_items(y_true, pred32)["loss_total"])
    np.testing.assert_allclose(total64, total32, rtol=1e-6)
    assert total64 != float(np.float32(total64))
    pred16 = {k: tf.cast(v, tf.float16) for k, v in pred32.items()}
    assert loss.loss_items(y_true, pred16)["loss_total"].dtype == tf.float32
