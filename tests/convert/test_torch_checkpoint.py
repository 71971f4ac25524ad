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
