"""Weight-file loading: unwrapping, prefixes, loud failures (SPEC §12 "Fix")."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bestie.models.weights import load_into, load_state_dict_file


def _module() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda state: state,
        lambda state: {"state_dict": state, "epoch": 3},
        lambda state: {"model": {f"module.{key}": value for key, value in state.items()}},
    ],
)
def test_load_state_dict_file_unwraps(tmp_path, wrap):
    state = _module().state_dict()
    path = tmp_path / "weights.pth"
    torch.save(wrap(state), path)
    loaded = load_state_dict_file(path, what="x.weights")
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[key], state[key]) for key in state)


def test_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    state = _module().state_dict()
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    assert set(load_state_dict_file(path, what="x.weights")) == set(state)


def test_missing_empty_and_pickled_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"x\.weights.*nope\.pth"):
        load_state_dict_file(tmp_path / "nope.pth", what="x.weights")
    with pytest.raises(ValueError, match="empty"):
        load_state_dict_file("", what="x.weights")
    path = tmp_path / "module.pth"
    torch.save(_module(), path)  # a pickled module, refused by weights_only=True
    with pytest.raises(ValueError, match="not a plain state dict"):
        load_state_dict_file(path, what="x.weights")
    torch.save({"epoch": 3}, path)
    with pytest.raises(ValueError, match="no tensors"):
        load_state_dict_file(path, what="x.weights")


def test_load_into_reports_missing_unexpected_and_shape_mismatch():
    target = _module()
    state = dict(_module().state_dict())
    state["0.weight"] = torch.zeros(5, 3, 3, 3)  # wrong shape: skipped, reported
    state["fc.weight"] = torch.zeros(2, 2)
    missing, unexpected = load_into(target, state, what="x.weights")
    assert missing == ["0.weight"]
    assert unexpected == ["0.weight", "fc.weight"]
    assert torch.equal(target[1].running_mean, state["1.running_mean"])
    with pytest.raises(ValueError, match="strict"):
        load_into(target, state, strict=True, what="x.weights")


def test_load_into_refuses_zero_matches():
    with pytest.raises(ValueError, match="x.weights: none of the 1 tensors"):
        load_into(_module(), {"other.weight": torch.zeros(1)}, what="x.weights")
