import os
import re
import sys

import numpy as np
import pytest

from orienmask_tf.convert.torch_checkpoint import CheckpointError
from orienmask_tf.convert.torch_checkpoint import load_state_dict
from orienmask_tf.families.orienmask.checkpoint import state_dict_from_model
from orienmask_tf.families.orienmask.network import OrienMask
from tests import testing

@pytest.fixture(scope="module")
def torch():
    # The [torch] extra is part of the test install (`make test`); without it
    # these tests fail with ImportError rather than silently skipping.
    import torch as torch_module
    return torch_module


@pytest.fixture(scope="module")
def tiny_state_dict():
    return state_dict_from_model(OrienMask(**testing.TINY_KWARGS))


def _as_tensors(torch, state_dict):
    return {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}


def _assert_same(loaded, expected):
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


@pytest.mark.torch
def test_bare_state_dict_pth(torch, tiny_state_dict, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_as_tensors(torch, tiny_state_dict), path)
    _assert_same(load_state_dict(path), tiny_state_dict)


@pytest.mark.torch
def test_official_training_checkpoint_layout(torch, tiny_state_dict, tmp_path):
    # What the official trainer saves (trainer/base.py: _save_checkpoint).
    path = tmp_path / "epoch100.pth"
    config = {"model": {"type": "OrienMaskYOLOFPNPlus", "num_anchors": 3,
                        "num_classes": 3, "pretrained": None},
              "optimizer": {"type": "SGD", "lr": 1e-3}}
    torch.save({"epoch": 100, "state_dict": _as_tensors(torch, tiny_state_dict),
                "optimizer": {"state": {}, "param_groups": []},
                "monitor_best": 0.3, "config": config}, path)
    loaded, loaded_config = load_state_dict(path, return_config=True)
    _assert_same(loaded, tiny_state_dict)
    assert loaded_config == config


@pytest.mark.torch
def test_data_parallel_prefix_is_removed(torch, tiny_state_dict, tmp_path):
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v
                for k, v in _as_tensors(torch, tiny_state_dict).items()}, path)
    _assert_same(load_state_dict(path), tiny_state_dict)


class Payload:
    """Stands for arbitrary code hidden in a pickle."""

    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.torch
def test_pickled_object_is_refused(torch, tiny_state_dict, tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _as_tensors(torch, tiny_state_dict),
                "hook": Payload()}, path)
    with pytest.raises(CheckpointError,
                       match=r"evil.pth: refused to load.*weights_only=True"):
        load_state_dict(path)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.torch
def test_non_tensor_entry_is_refused(torch, tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"conv1.conv_block.0.weight": [1.0, 2.0]}, path)
    with pytest.raises(CheckpointError,
                       match=r"odd.pth: entry 'conv1.conv_block.0.weight' is a "
                             r"list, expected a tensor"):
        load_state_dict(path)


@pytest.mark.torch
def test_bfloat16_tensors_are_read_as_float32(torch, tmp_path):
    path = tmp_path / "bf16.pth"
    torch.save({"w": torch.ones(2, dtype=torch.bfloat16)}, path)
    loaded = load_state_dict(path)
    assert loaded["w"].dtype == np.float32 and np.all(loaded["w"] == 1)


@pytest.mark.torch
def test_corrupt_pth_is_refused(torch, tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pth"):
        load_state_dict(path)


def test_npz_state_dict_needs_no_torch(tiny_state_dict, tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, **tiny_state_dict)
    _assert_same(load_state_dict(path), tiny_state_dict)


def test_npz_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="objects.npz: not a readable"):
        load_state_dict(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth: no such checkpoint"):
        load_state_dict(tmp_path / "nope.pth")


# -- official training checkpoints (duwt/OrienMask trainer/base.py) ---------

OFFICIAL_CONFIG = {
    "model": {"type": "OrienMaskYOLO", "num_anchors": 3, "num_classes": 3,
              "pretrained": None},
    "loss": {"type": "OrienMaskYOLOMultiScaleLoss",
             "anchors": [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45],
                         [59, 119], [116, 90], [156, 198], [373, 326]]},
    "optimizer": {"type": "SGD", "lr": 1e-3, "momentum": 0.9},
    "lr_scheduler": {"type": "StepWarmUpLR", "warmup_type": "linear",
                     "warmup_iter": 1000, "warmup_ratio": 0.1,
                     "milestones": [520000, 660000], "gamma": 0.1},
}


@pytest.fixture
def official_optim(torch, monkeypatch):
    """Stand-ins of the official ``optim.lr_scheduler`` classes, registered
    under the official module path so that ``torch.save`` pickles the same
    globals as the official trainer (``StepWarmUpLR.state_dict()`` holds a
    ``WarmupLR`` object and a ``collections.Counter``)."""
    import types

    package = types.ModuleType("optim")
    module = types.ModuleType("optim.lr_scheduler")

    class WarmupLR:
        def __init__(self, warmup_type, warmup_iter, warmup_ratio):
            self.type, self.iter, self.ratio = (warmup_type, warmup_iter,
                                                warmup_ratio)

    class StepWarmUpLR(torch.optim.lr_scheduler.MultiStepLR):
        def __init__(self, warmup_type, warmup_iter, warmup_ratio,
                     optimizer, milestones, gamma=0.1):
            self.warmup = WarmupLR(warmup_type, warmup_iter, warmup_ratio)
            super().__init__(optimizer, milestones, gamma)

    for cls in (WarmupLR, StepWarmUpLR):
        cls.__module__, cls.__qualname__ = module.__name__, cls.__name__
        setattr(module, cls.__name__, cls)
    package.lr_scheduler = module
    monkeypatch.setitem(sys.modules, "optim", package)
    monkeypatch.setitem(sys.modules, "optim.lr_scheduler", module)
    return module


def _save_training_checkpoint(torch, official_optim, state_dict, path,
                              extra=None):
    params = [torch.nn.Parameter(torch.ones(2))]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9,
                                weight_decay=5e-4)
    scheduler = official_optim.StepWarmUpLR("linear", 1000, 0.1, optimizer,
                                            milestones=[520000, 660000])
    params[0].grad = torch.ones(2)
    optimizer.step()
    scheduler.step()
    state = {"epoch": 100, "state_dict": _as_tensors(torch, state_dict),
             "optimizer": optimizer.state_dict(),
             "lr_scheduler": scheduler.state_dict(), "monitor_best": 0.341,
             "config": OFFICIAL_CONFIG}
    state.update(extra or {})
    torch.save(state, path)


@pytest.mark.torch
def test_official_epoch_checkpoint_with_scheduler_objects_converts(
        torch, official_optim, tiny_state_dict, tmp_path, monkeypatch):
    path = tmp_path / "epoch100.pth"
    _save_training_checkpoint(torch, official_optim, tiny_state_dict, path)
    # The file pickles the official class: plain weights_only refuses it.
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) \
        == ["optim.lr_scheduler.WarmupLR"]
    with pytest.raises(Exception, match="WarmupLR"):
        torch.load(path, weights_only=True)
    # Read without the official code: nothing of it is imported.
    monkeypatch.delitem(sys.modules, "optim")
    monkeypatch.delitem(sys.modules, "optim.lr_scheduler")
    loaded, config = load_state_dict(path, return_config=True)
    _assert_same(loaded, tiny_state_dict)
    assert config == OFFICIAL_CONFIG
    assert "optim" not in sys.modules
    # The allow-list was scoped to the load.
    registered = [g[0] if isinstance(g, tuple) else g
                  for g in torch.serialization.get_safe_globals()]
    assert not any(getattr(g, "official_name", "") for g in registered)


@pytest.mark.torch
def test_other_pickled_globals_are_still_refused_by_name(
        torch, official_optim, tiny_state_dict, tmp_path, capsys):
    class SystemCall:
        def __reduce__(self):
            return (os.system, ("echo this must never run",))

    path = tmp_path / "evil_epoch.pth"
    _save_training_checkpoint(torch, official_optim, tiny_state_dict, path,
                              extra={"hook": SystemCall()})
    name = f"{os.system.__module__}.system"
    with pytest.raises(CheckpointError, match=re.escape(name)) as error:
        load_state_dict(path)
    message = str(error.value)
    assert "evil_epoch.pth: refused to load" in message
    assert "WarmupLR" not in message            # the official class is fine
    assert "\x1b" not in message                 # no terminal escapes
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.torch
def test_refusal_names_an_unknown_class_of_the_official_module(
        torch, official_optim, tmp_path):
    class Other:
        pass

    Other.__module__, Other.__qualname__ = "optim.lr_scheduler", "Other"
    official_optim.Other = Other
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {}, "x": Other()}, path)
    with pytest.raises(CheckpointError, match=r"optim\.lr_scheduler\.Other"):
        load_state_dict(path)


def test_anchors_of_the_checkpoint_config_are_checked():
    from orienmask_tf.families.orienmask.anchors import resolve_anchors
    from orienmask_tf.families.orienmask.checkpoint import \
        check_official_config

    base = OrienMask(variant="base", **testing.TINY_KWARGS)
    with pytest.raises(CheckpointError,
                       match=r"loss\.anchors yolov3 but the config has "
                             r"anchors yolov4; set anchors=yolov3"):
        check_official_config(base, OFFICIAL_CONFIG, "epoch100.pth",
                              anchors=resolve_anchors("yolov4"))
    check_official_config(base, OFFICIAL_CONFIG,
                          anchors=resolve_anchors("yolov3"))
    check_official_config(base, OFFICIAL_CONFIG)          # no user anchors
    postprocess = dict(OFFICIAL_CONFIG, postprocess={
        "anchors": [[12, 16]] * 9})
    with pytest.raises(CheckpointError, match=r"postprocess\.anchors "
                                              r"\[\[12\.0, 16\.0\]"):
        check_official_config(base, postprocess,
                              anchors=resolve_anchors("yolov3"))


def test_anchor_mismatch_stops_cli_conversion(tiny_state_dict):
    from orienmask_tf.config import load_config
    from tests.testing import CONFIGS_DIR

    config = load_config(CONFIGS_DIR / "tiny.yaml",
                         ["model.variant=base", "model.num_classes=3"])
    network = config.family.build_network(config)
    with pytest.raises(CheckpointError, match="set anchors=yolov3"):
        config.family.convert_checkpoint(
            network, tiny_state_dict, OFFICIAL_CONFIG, config=config,
            source="epoch100.pth")


def test_classifier_keys_point_to_skip_keys(tiny_state_dict):
    from orienmask_tf.families.orienmask.checkpoint import convert_state_dict

    model = OrienMask(**testing.TINY_KWARGS)
    extra = dict(tiny_state_dict, **{"fc.weight": np.zeros((10, 4)),
                                     "fc.bias": np.zeros((10,))})
    with pytest.raises(CheckpointError,
                       match=r"unexpected keys \(2\).*\n.*classifier.*"
                             r"--skip-keys '\^\(fc\)\\\.'"):
        convert_state_dict(model, extra)
    report = convert_state_dict(model, extra, skip_keys=r"^(fc)\.")
    assert report["skipped"] == ["fc.bias", "fc.weight"]
    # Other unexpected keys, or missing ones too: no such hint.
    missing = {k: v for k, v in extra.items() if not k.startswith("neck32")}
    for entries in (dict(extra, **{"neck.x.weight": np.zeros(1)}), missing):
        with pytest.raises(CheckpointError) as error:
            convert_state_dict(model, entries)
        assert "--skip-keys" not in str(error.value)
