"""Loading pretrained weights from local files, loudly.

The official code loads ImageNet weights with ``strict=False`` and, when the file is missing or
its key names do not match, trains on from a random initialisation without saying so (SPEC §3.1,
§12 "Fix"). Here a weights path that was asked for must exist and must load at least one tensor;
how many tensors were loaded, skipped and left at their initial values is logged.

Nothing here downloads: every file is a local path from the config.

Reference: replaces the ``load_state_dict(..., strict=False)`` calls of clovaai/BESTIE@f27eb69
models/hrnet.py (``init_weights``) and models/resnet.py.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["load_into", "load_state_dict_file"]

_LOG = logging.getLogger(__name__)

# Wrapper keys that training scripts put around a state dict (checkpoint dicts, DDP saves).
_WRAPPER_KEYS = ("state_dict", "model", "model_state", "module")
# Key prefixes added by DataParallel/DDP and torch.compile.
_KEY_PREFIXES = ("module.", "_orig_mod.")


def load_state_dict_file(path: str | Path, *, what: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.pth``/``.pt`` (or ``.safetensors``) file on disk.

    The file is read with ``torch.load(..., map_location="cpu", weights_only=True)``, so a
    pickled module or arbitrary code is refused. A checkpoint that wraps the state dict
    (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped, and ``module.`` /
    ``_orig_mod.`` key prefixes (DDP, torch.compile) are stripped. Non-tensor entries
    (epoch counters, ...) are dropped.

    Args:
        path: the weights file.
        what: what the file is for, named as the config key that holds it (e.g.
            ``"instance.weights"``); it is quoted in every error message.

    Returns:
        dict mapping parameter/buffer names to CPU tensors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is empty, or the file holds no tensors or cannot be read with
            ``weights_only=True``.
    """
    if not str(path):
        raise ValueError(f"{what}: an empty weights path was given")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what}: weights file not found: {file}")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: object = load_file(str(file), device="cpu")
    else:
        try:
            raw = torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{what}: {file} is not a plain state dict (torch.load weights_only=True "
                f"refused it): {error}"
            ) from error
    state = _unwrap(raw)
    if not state:
        raise ValueError(f"{what}: {file} holds no tensors")
    return state


def _unwrap(raw: object) -> dict[str, torch.Tensor]:
    """Peel checkpoint wrappers and DDP prefixes off a loaded object."""
    while isinstance(raw, Mapping):
        wrapped = [key for key in _WRAPPER_KEYS if isinstance(raw.get(key), Mapping)]
        if not wrapped or any(isinstance(value, torch.Tensor) for value in raw.values()):
            break
        raw = raw[wrapped[0]]
    if not isinstance(raw, Mapping):
        return {}
    state = {str(key): value for key, value in raw.items() if isinstance(value, torch.Tensor)}
    for prefix in _KEY_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def load_into(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    strict: bool = False,
    what: str = "weights",
) -> tuple[list[str], list[str]]:
    """Copy the tensors of ``state`` whose name and shape match into ``module``.

    Args:
        module: the receiving module (its own key names, e.g. torchvision ResNet names).
        state: name -> tensor, e.g. from :func:`load_state_dict_file`.
        strict: if True, any missing or unexpected key is an error.
        what: the config key the weights came from, for messages.

    Returns:
        ``(missing, unexpected)``: the module's keys left at their initial values, and the
        file's keys not used (wrong name, or same name with a different shape).

    Raises:
        ValueError: no tensor matched (the official code's silent random init), or ``strict``
            and some key was missing or unexpected.
    """
    own = module.state_dict()
    matched = {
        key: value
        for key, value in state.items()
        if key in own and tuple(own[key].shape) == tuple(value.shape)
    }
    missing = sorted(set(own) - set(matched))
    unexpected = sorted(set(state) - set(matched))
    if not matched:
        raise ValueError(
            f"{what}: none of the {len(state)} tensors in the file matches the "
            f"{type(module).__name__} parameters by name and shape (file keys start "
            f"{sorted(state)[:3]}, model keys start {sorted(own)[:3]}); refusing to train "
            f"from a random init"
        )
    if strict and (missing or unexpected):
        raise ValueError(
            f"{what}: strict load failed: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    module.load_state_dict(matched, strict=False)
    # BN step counters are absent from most published files; anything else left at its
    # random init deserves a look.
    untrained = [key for key in missing if not key.endswith("num_batches_tracked")]
    if untrained:
        _LOG.warning(
            "%s: %d tensors of %s not in the file, left at init (e.g. %s)",
            what,
            len(untrained),
            type(module).__name__,
            untrained[:5],
        )
    _LOG.info(
        "%s: loaded %d/%d tensors into %s (%d left at init, %d file tensors unused)",
        what,
        len(matched),
        len(own),
        type(module).__name__,
        len(missing),
        len(unexpected),
    )
    return missing, unexpected
