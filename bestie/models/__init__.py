"""Networks: backbones, the CAM/PAM classifier, the instance network, the semantic network.

Names are exported lazily (PEP 562), so importing one submodule does not build or import the
others (timm, for instance, is only imported for HRNet). Add new exports to ``_EXPORTS``.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_EXPORTS = {
    "build_instance_net": "instance_net",
    "build_semantic_net": "semantic_net",
    "build_backbone": "backbones",
    "load_into": "weights",
    "load_state_dict_file": "weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
