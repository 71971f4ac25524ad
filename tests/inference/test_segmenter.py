"""The Python API (``import orienmask_tf as om``) beyond the per-family
contract: presets, weights, evaluation, errors."""

import numpy as np
import pytest

import orienmask_tf as om
from orienmask_tf.saving import save_network
from tests import testing

TINY_COCO = testing.TESTS_DIR / "fixtures" / "tiny_coco"


def test_presets_are_the_shipped_configs():
    presets = om.presets()
    assert set(presets) == {p.stem for p in testing.SHIPPED_CONFIGS}
    for name, info in presets.items():
        assert info["family"] in ("orienmask", "yolact"), name
    assert presets["yolact_r50_550_atss_maiou"]["reproduces"].startswith(
        "Mask-aware IoU")
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        om.from_preset("nope")


def test_from_preset_with_weights_and_overrides(tmp_path):
    source = om.from_preset("tiny")
    path = source.save(tmp_path / "tiny.keras")
    seg = om.from_preset("tiny", weights=path,
                         overrides=["decode.nms_threshold=0.6"])
    assert seg.config.decode.nms_threshold == 0.6
    for a, b in zip(source.network.weights, seg.network.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert "OrienMask" in repr(seg) and "64x96" in repr(seg)
    with pytest.raises(ValueError, match="model.num_classes=4"):
        om.from_preset("tiny", weights=path,
                       overrides=["model.num_classes=4"])


def test_load_applies_overrides_and_refuses_contradictions(tmp_path):
    seg = om.from_preset("yolact_tiny")
    path = seg.save(tmp_path / "y.keras")
    loaded = om.load(path, overrides=["decode.score_thr=0.2"])
    assert loaded.config.decode.score_thr == 0.2
    assert loaded.config.model == seg.config.model
    with pytest.raises(ValueError, match="model.fpn_channels=32"):
        om.load(path, overrides=["model.fpn_channels=32"])
    with pytest.raises(ValueError, match="holds the Yolact network"):
        om.load(path, config=str(testing.CONFIGS_DIR / "tiny.yaml"))


def test_plain_keras_file_needs_a_config(tmp_path):
    seg = om.from_preset("tiny")
    seg.network.save(tmp_path / "plain.keras")
    with pytest.raises(ValueError, match="carries no experiment"):
        om.load(tmp_path / "plain.keras")
    loaded = om.load(tmp_path / "plain.keras",
                     config=str(testing.CONFIGS_DIR / "tiny.yaml"))
    assert loaded.config.name == "tiny"


def test_evaluate_on_a_coco_json(tmp_path):
    seg = om.from_preset("tiny", overrides=["model.num_classes=3"])
    stats = seg.evaluate(TINY_COCO / "instances.json", TINY_COCO / "images",
                         batch_size=2, verbose=False)
    assert set(stats) == {"bbox", "segm"}
    assert len(stats["segm"]) == 12
    with pytest.raises(ValueError, match="image folder"):
        seg.evaluate(TINY_COCO / "instances.json")


def test_save_is_atomic_and_checks_the_name(tmp_path):
    seg = om.from_preset("tiny")
    with pytest.raises(ValueError, match="expected a .keras file name"):
        save_network(seg.network, tmp_path / "model.h5", seg.config)
    assert not list(tmp_path.iterdir())


def test_a_fresh_process_loads_any_family_from_the_file_alone(tmp_path):
    """Keras resolves a custom class only once its module is imported: a new
    process that knows nothing but the path must still load the file."""
    import subprocess
    import sys

    path = om.from_preset("mayolact_tiny").save(tmp_path / "m.keras")
    code = ("import orienmask_tf as om, sys; "
            "print(om.load(sys.argv[1]).config.name)")
    result = subprocess.run([sys.executable, "-c", code, str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("mayolact_tiny")
