"""The contract every registered model family keeps, run on each of its tiny
presets (``Family.test_presets``): a new family gets these tests by being
registered."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import orienmask_tf as om
from orienmask_tf import registry
from orienmask_tf.config import config_to_dict
from orienmask_tf.config import load_config
from orienmask_tf.data.pipeline import build_dataset
from orienmask_tf.inference.segmenter import preset_path
from orienmask_tf.saving import SIDECAR
from orienmask_tf.saving import save_network
from orienmask_tf.training.train_model import TrainModel
from tests import testing

TINY_COCO = testing.TESTS_DIR / "fixtures" / "tiny_coco"
DATA = [f"data.train_annotations={TINY_COCO / 'instances.json'}",
        f"data.train_images={TINY_COCO / 'images'}",
        f"data.val_annotations={TINY_COCO / 'instances.json'}",
        f"data.val_images={TINY_COCO / 'images'}",
        "data.max_instances=6", "data.shuffle_buffer=4",
        "data.deterministic=true", "data.num_parallel_calls=1",
        # Keep the fixture's image without annotations in the training
        # stream (YOLACT drops them by default, as mmdet): its all-negative
        # OHEM loss is what reaches every FPN level from one tiny batch.
        "data.skip_empty=false",
        "train.batch_size=2"]


def test_every_family_is_registered_with_a_tiny_preset():
    assert set(registry.names()) >= {"orienmask", "yolact"}
    for name in registry.names():
        family = registry.get(name)
        assert family.name == name and family.display_name
        assert om.presets()[family.tiny_preset]["family"] == name
        for preset in family.test_presets:
            assert om.presets()[preset]["family"] == name
    assert registry.default_family().name in registry.names()


def _test_presets():
    for name in sorted(registry.names()):
        family = registry.get(name)
        yield from (family.test_presets or (family.tiny_preset,))


@pytest.fixture(params=list(_test_presets()), scope="module")
def config(request):
    """The experiment of each tiny preset of each family."""
    return load_config(preset_path(request.param), DATA)


@pytest.fixture(scope="module")
def network(config):
    return testing.random_family_network(config)


def _images(config, batch=2, seed=0):
    return testing.random_images(batch, *config.image_size, seed=seed)


def _inputs(config, images):
    """RGB [0, 1] -> the network's own input (the family's normalisation)."""
    adapter = config.family.make_adapter(
        config.family.build_network(config), config.image_size,
        *config.family.inference_args(config))
    return np.asarray(adapter.normalize(tf.constant(images)))


def test_output_shapes_match_the_network_description(config, network):
    height, width = config.image_size
    outputs = network(_inputs(config, _images(config)), training=False)
    expected = network.output_shapes(height, width, 2)
    assert set(outputs) == set(expected)
    for key, shape in expected.items():
        assert tuple(outputs[key].shape) == tuple(shape), key
        assert outputs[key].dtype == tf.float32, key


def test_images_of_a_batch_do_not_interact(config, network):
    inputs = _inputs(config, _images(config, batch=3, seed=1))
    together = network(inputs, training=False)
    for i in range(3):
        alone = network(inputs[i:i + 1], training=False)
        for key in together:
            np.testing.assert_allclose(alone[key][0], together[key][i],
                                       rtol=1e-4, atol=1e-4, err_msg=key)


def _one_batch(config):
    encoder = config.family.make_encoder(config)
    dataset = build_dataset(config, "train", encoder=encoder)
    return next(iter(dataset))


def test_every_weight_gets_a_finite_gradient(config):
    network = testing.random_family_network(config, seed=1)
    model = TrainModel(network, config.family.make_loss(config))
    images, targets = _one_batch(config)
    with tf.GradientTape() as tape:
        predictions = model(images, training=True)
        items, total = model.training_loss.loss_items(targets, predictions)
    assert set(items) == set(model.item_names)
    assert np.isfinite(float(total)) and float(total) > 0
    gradients = tape.gradient(total, network.trainable_weights)
    missing = [w.path for w, g in zip(network.trainable_weights, gradients)
               if g is None]
    assert not missing, missing
    for weight, gradient in zip(network.trainable_weights, gradients):
        assert np.all(np.isfinite(gradient)), weight.path
    nonzero = [float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients]
    assert np.mean(nonzero) > 0.95, np.mean(nonzero)


def test_mixed_precision_forward_and_loss(config):
    keras.config.set_dtype_policy("mixed_bfloat16")  # conftest restores
    network = config.family.build_network(config)
    images, targets = _one_batch(config)
    outputs = network(images, training=True)
    for key, value in outputs.items():
        assert value.dtype == tf.float32, key
        assert np.all(np.isfinite(value)), key
    loss = config.family.make_loss(config)
    _, total = loss.loss_items(targets, outputs)
    assert np.isfinite(float(total))


def test_keras_file_carries_its_experiment(config, network, tmp_path):
    path = save_network(network, tmp_path / "model.keras", config)
    with zipfile.ZipFile(path) as archive:
        stored = json.loads(archive.read(SIDECAR))
    assert stored["family"] == config.architecture
    assert stored["experiment"] == json.loads(json.dumps(
        config_to_dict(config)))
    segmenter = om.load(path)
    assert segmenter.config == config
    inputs = _inputs(config, _images(config))
    expected = network(inputs, training=False)
    got = segmenter.network(inputs, training=False)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    assert not list(tmp_path.glob(".tmp-*"))  # nothing half-written left


def test_checkpoint_converter_round_trip(config, network):
    family = config.family
    state_dict = family.state_dict_from_model(network)
    copy = family.build_network(config)
    report = family.convert_checkpoint(copy, state_dict, config=config,
                                       source="round trip")
    assert report["assigned"] == len(state_dict) - sum(
        k.endswith("num_batches_tracked") for k in state_dict)
    for a, b in zip(network.weights, copy.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_saved_model_and_tflite_reproduce_the_keras_detections(
        config, network, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    segmenter = om.Segmenter(network, config)
    images = _images(config, batch=1, seed=3)
    expected = {k: np.asarray(v) for k, v in segmenter.inference_model(
        jit_compile=False).detect(images).items()}
    assert int(expected["num_detections"][0]) > 0
    # The uint8 signature maps boxes to the (here equal) original size and
    # clips them to the image.
    height, width = config.image_size
    clipped = np.clip(expected["boxes"], 0, [width, height, width, height])

    export_dir = segmenter.export("saved_model", output=str(tmp_path / "sm"))
    loaded = tf.saved_model.load(export_dir)
    pixels = (images * 255).round().astype(np.uint8)
    served = {k: np.asarray(v) for k, v in
              loaded.signatures["serving_default"](
                  images=tf.constant(pixels)).items()}
    n = int(served["num_detections"][0])
    assert n == int(expected["num_detections"][0])
    np.testing.assert_array_equal(served["classes"][0, :n],
                                  expected["classes"][0, :n])
    np.testing.assert_allclose(served["boxes"][0, :n], clipped[0, :n],
                               atol=1e-3)

    path = segmenter.export("tflite", output=str(tmp_path / "m.tflite"))
    runner = Interpreter(model_path=path).get_signature_runner("serve")
    lite = runner(images=images)
    n = int(lite["num_detections"][0])
    assert n == int(expected["num_detections"][0])
    np.testing.assert_array_equal(lite["classes"][0, :n],
                                  expected["classes"][0, :n])
    np.testing.assert_allclose(lite["boxes"][0, :n], expected["boxes"][0, :n],
                               atol=1e-3)


def test_python_api_predict_returns_results_in_original_pixels(config,
                                                               network):
    segmenter = om.Segmenter(network, config)
    image = (testing.random_images(1, 70, 90, seed=4)[0] * 255).astype(
        np.uint8)
    path = str(TINY_COCO / "images" / sorted(
        p.name for p in (TINY_COCO / "images").iterdir())[0])
    results = segmenter.predict([image, path], score_threshold=0.0)
    assert len(results) == 2
    first = results[0]
    assert first.image_size == (70, 90) and first.path is None
    assert first.masks.shape == (len(first), 70, 90)
    assert first.masks.dtype == bool
    assert np.all(first.boxes[:, 2] <= 90) and np.all(first.boxes[:, 3] <= 70)
    assert all(name == segmenter.class_names[k]
               for name, k in zip(first.class_names, first.class_ids))
    assert results[1].path == path
    assert np.all(np.diff(first.scores) <= 1e-6) or len(first) < 2
    with pytest.raises(ValueError, match="uint8"):
        segmenter.predict(image.astype(np.float32))
