import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.config import load_config
from orienmask_tf.export.saved_model import export_saved_model
from tests import testing

TINY = testing.CONFIGS_DIR / "tiny.yaml"  # image_size [64, 96]


@pytest.fixture(scope="module")
def serve_raw(tmp_path_factory):
    config = load_config(TINY)
    model = testing.random_tiny_model(seed=3)
    path = tmp_path_factory.mktemp("serve_raw") / "1"
    export_saved_model(model, config.image_size, config.anchor_array(),
                       config.decode_kwargs(), str(path))
    loaded = tf.saved_model.load(str(path))
    return model, loaded.signatures["serve_raw"]


def test_serve_raw_runs_the_declared_size(serve_raw):
    model, signature = serve_raw
    images = testing.random_images(2, 64, 96, seed=1)
    got = signature(images=tf.constant(images))
    for key, value in model(images, training=False).items():
        np.testing.assert_allclose(got[key], value, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("shape", [
    (1, 96, 96, 3),   # a multiple of 32 the network could run, not declared
    (1, 64, 64, 3),
    (1, 70, 96, 3),   # not a multiple of 32
    (1, 96, 64, 3),   # transposed
    (1, 64, 96, 1),   # gray
    (2, 64, 96, 4),   # RGBA
])
def test_serve_raw_refuses_other_sizes_naming_the_expected_one(serve_raw,
                                                               shape):
    # The reloaded signature does not enforce its declared input shape by
    # itself: without the check, (1, 96, 96, 3) returns larger outputs.
    _, signature = serve_raw
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        signature(images=tf.zeros(shape))
    message = str(error.value)
    assert "images must be float32 [batch, 64, 96, 3]" in message
    assert "got shape" in message and str(list(shape)[1]) in message
