"""Shared test helpers: reference fixtures, tiny configs, random official weights."""

import json
import pathlib

import numpy as np

TESTS_DIR = pathlib.Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
REFERENCE_DIR = TESTS_DIR / "fixtures" / "reference"
CONFIGS_DIR = REPO_DIR / "configs"
SHIPPED_CONFIGS = sorted(CONFIGS_DIR.glob("*.yaml"))

# Official class name -> our variant.
OFFICIAL_VARIANTS = {"OrienMaskYOLOFPNPlus": "fpn_plus", "OrienMaskYOLO": "base"}

# Tiny architecture for behaviour tests: same code, narrow and shallow.
TINY_KWARGS = dict(num_classes=3, width=4, stackwise_num_blocks=(1, 1, 1, 1, 1))


def reference_path(*parts):
    """Path of a reference fixture; a missing file fails the test loudly."""
    path = REFERENCE_DIR.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"reference fixture {path} is missing: copy it from "
            "../shared/fixtures (see tests/fixtures/reference/README.md)")
    return path


def official_model_listing(official_name):
    """The recorded official ``model_<name>.json`` (state_dict listing etc.)."""
    with open(reference_path("orienmask", f"model_{official_name}.json")) as f:
        return json.load(f)


def random_official_state_dict(listing, seed=0):
    """A random state_dict shaped like the official model, from numpy only.

    Uses the legacy ``RandomState`` stream, which numpy keeps bit-stable
    across versions, so recorded outputs of the official model for this
    state_dict stay valid. Magnitudes keep activations O(1) through the 75
    layers: conv weights N(0, 1/fan_in), BN statistics near identity.
    """
    rng = np.random.RandomState(seed)
    state_dict = {}
    for entry in listing["state_dict"]:
        key, shape = entry["key"], tuple(entry["shape"])
        if key.endswith("num_batches_tracked"):
            value = np.array(rng.randint(0, 10000), dtype=np.int64)
        elif len(shape) == 4:
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        elif key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("running_mean"):
            value = rng.uniform(-0.2, 0.2, shape)
        elif key.endswith(".weight"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.uniform(-0.2, 0.2, shape)
        state_dict[key] = (value if value.dtype == np.int64
                           else value.astype(np.float32))
    return state_dict


def random_images(batch, height, width, seed=0):
    """uint8-quantised RGB images in [0, 1], NHWC float32 (RandomState stream)."""
    rng = np.random.RandomState(seed)
    pixels = rng.randint(0, 256, size=(batch, height, width, 3))
    return (pixels / 255.0).astype(np.float32)


def tiny_state_dict(seed=0, **overrides):
    """Random official-layout state_dict for a tiny ``OrienMask``."""
    from orienmask_tf.families.orienmask.checkpoint import state_dict_from_model
    from orienmask_tf.families.orienmask.network import OrienMask

    model = OrienMask(**{**TINY_KWARGS, **overrides})
    listing = {"state_dict": [
        {"key": k, "shape": list(np.shape(v))}
        for k, v in state_dict_from_model(model).items()]}
    return random_official_state_dict(listing, seed=seed)


def random_tiny_model(seed=0, **overrides):
    """Tiny ``OrienMask`` with non-degenerate random weights.

    A freshly initialised network (PyTorch init, identity BatchNorm) decays
    its signal to almost constant outputs, so scores tie everywhere and the
    detection order becomes a matter of tie-breaking; these weights keep
    activations O(1) like a trained model's.
    """
    from orienmask_tf.families.orienmask.checkpoint import convert_state_dict
    from orienmask_tf.families.orienmask.network import OrienMask

    model = OrienMask(**{**TINY_KWARGS, **overrides})
    convert_state_dict(model, tiny_state_dict(seed, **overrides))
    return model


def uint8_images(batch, height, width, seed):
    """``random_images`` as uint8 pixels (what the serving signatures take)."""
    return (random_images(batch, height, width, seed) * 255).astype(np.uint8)


def assert_same_detections(got, expected, box_atol=1e-4):
    """Two detection dicts (``export.serving.DETECTION_KEYS``) agree: same
    counts, classes and masks, scores within 1e-5, boxes within box_atol."""
    np.testing.assert_array_equal(got["num_detections"],
                                  expected["num_detections"])
    np.testing.assert_array_equal(got["classes"], expected["classes"])
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-5)
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=box_atol)
    np.testing.assert_array_equal(got["masks"], expected["masks"])


def assert_drawn_predictions(images, out, detections_json, keys):
    """``predict`` wrote every image of ``images`` to ``out``, same size and
    visibly drawn on, and a COCO JSON whose records hold ``keys``; returns
    the JSON records."""
    import os

    import cv2

    names = sorted(os.listdir(images))
    assert sorted(os.listdir(out)) == names
    for name in names:
        original = cv2.imread(str(pathlib.Path(images) / name))
        drawn = cv2.imread(str(pathlib.Path(out) / name))
        assert drawn.shape == original.shape
        assert np.abs(drawn.astype(int) - original.astype(int)).mean() > 1
    results = json.loads(pathlib.Path(detections_json).read_text())
    assert results and set(keys) <= set(results[0])
    return results


def assert_model_file_travels_alone(model, folder, shapes, monkeypatch,
                                    capsys):
    """Copy only ``model`` (a trained ``.keras``) into the empty ``folder``,
    work there, and run ``predict``, ``evaluate`` and ``export`` with
    ``--model`` alone (plus the data to run on): no config file exists
    anywhere near it."""
    import shutil

    from orienmask_tf import cli

    shutil.copy(model, pathlib.Path(folder) / "model.keras")
    monkeypatch.chdir(folder)
    assert sorted(p.name for p in pathlib.Path(folder).iterdir()) == [
        "model.keras"]
    images = pathlib.Path(shapes) / "val"
    annotations = pathlib.Path(shapes) / "annotations" / "instances_val.json"
    assert cli.main(["predict", "--model", "model.keras", "--images",
                     str(images), "--output", "drawn",
                     "--score-threshold", "0"]) == 0
    assert len(list(pathlib.Path("drawn").iterdir())) == len(
        list(images.iterdir()))
    assert cli.main(["evaluate", "--model", "model.keras", "--annotations",
                     str(annotations), "--images", str(images), "--output",
                     "metrics.json"]) == 0
    metrics = json.loads(pathlib.Path("metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"}
    assert cli.main(["export", "--model", "model.keras", "--format",
                     "tflite", "--output", "model.tflite"]) == 0
    assert pathlib.Path("model.tflite").stat().st_size > 0
    out = capsys.readouterr()
    assert "error" not in out.err
    # A setting that contradicts the network is refused, naming it.
    assert cli.main(["predict", "--model", "model.keras", "--images",
                     str(images), "--output", "drawn2", "--set",
                     "model.num_classes=7"]) == 2
    assert "model.num_classes=7" in capsys.readouterr().err


def random_family_state_dict(config, seed=0, network=None):
    """A random state_dict in the official layout of ``config``'s network
    (shapes from the family's own ``state_dict_from_model``)."""
    family = config.family
    network = network or family.build_network(config)
    listing = {"state_dict": [
        {"key": k, "shape": list(np.shape(v))}
        for k, v in family.state_dict_from_model(network).items()]}
    return random_official_state_dict(listing, seed=seed)


def random_family_network(config, seed=0):
    """``config``'s network with non-degenerate random weights (see
    ``random_tiny_model``), set through the family's own converter."""
    family = config.family
    network = family.build_network(config)
    family.convert_checkpoint(
        network, random_family_state_dict(config, seed, network),
        config=config, source="random")
    return network
