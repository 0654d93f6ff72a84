"""Experiments: named variants of the base config, and which artifacts they share.

An experiment is the base config deep-merged with its overrides (``experiments:`` in the
config; with ``seeds: [..]`` every experiment is repeated per seed as ``{name}_seed{s}``).
Each pipeline stage reads a fixed set of config sections and the artifacts of upstream
stages. A stage's *key* hashes those sections and the upstream keys, so two experiments with
equal keys would compute the same artifact: the first such experiment (in config order)
*owns* it and the others read it from there. A Table-3 grid therefore trains the
classifier once.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bestie.config import Config, ConfigError, from_dict, to_dict
from bestie.sections import ClassifierConfig, MaskRcnnConfig

DEFAULT_EXPERIMENT = "bestie"


@dataclass(frozen=True)
class Stage:
    """A stage's config sections (top-level keys) and the stages it reads from."""

    sections: tuple[str, ...]
    inputs: Callable[[Config], list[str]]
    adjust: Callable[[dict[str, Any]], dict[str, Any]] | None = None


# The classifier keys that only the PAM classifier reads.
PAM_KEYS = ("pam_layers", "pam_alpha", "pam_init", "pam_epochs", "pam_lr")


def _cam_classifier(sections: dict[str, Any]) -> dict[str, Any]:
    """The CAM classifier is the PAM classifier's recipe with no PAM layers."""
    defaults = to_dict(ClassifierConfig())
    sections["classifier"].update({key: defaults[key] for key in PAM_KEYS}, pam_layers=[])
    return sections


def _pam_fine_tuned(cfg: Config) -> bool:
    return cfg.classifier.pam_init == "cam" and bool(cfg.classifier.pam_layers)


def _pam_classifier(sections: dict[str, Any]) -> dict[str, Any]:
    """pam_init cam: the PAM classifier fine-tunes the CAM one, pam_epochs at pam_lr."""
    classifier = sections["classifier"]
    if classifier["pam_init"] == "cam" and classifier["pam_layers"]:
        classifier.update(epochs=classifier["pam_epochs"], lr=classifier["pam_lr"], lr_steps=[])
    return sections


def _cue_inputs(cfg: Config) -> list[str]:
    if cfg.cues.source == "gt_points" or cfg.supervision == "point":
        return ["dataset"]
    return ["dataset", f"classifier_{cfg.cues.classifier}"]


def _wsss_inputs(cfg: Config) -> list[str]:
    return ["dataset", "classifier_cam"] if cfg.wsss.method == "cam" else ["dataset"]


def _instance_sections(sections: dict[str, Any]) -> dict[str, Any]:
    """Decoding shapes the instance network only when it selects a snapshot on held-out
    train images (instance.holdout)."""
    if not sections["instance"]["holdout"]:
        del sections["decode"]
    return sections


def check(cfg: Config, label: str) -> None:
    """Checks across keys that the schema cannot express, at workflow start."""
    holdout = cfg.instance.holdout
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(
            f"experiment {label}: 'instance.holdout' must lie in [0, 1), got {holdout}"
        )
    if holdout and not cfg.instance.snapshot_every:
        raise ConfigError(
            f"experiment {label}: 'instance.holdout' selects among the snapshots of training; "
            "set 'instance.snapshot_every' > 0"
        )
    alpha = cfg.cues.pam_alpha
    if alpha != -1.0 and not 0.0 <= alpha <= 1.0:
        raise ConfigError(
            f"experiment {label}: 'cues.pam_alpha' must be -1 (the classifier's) or lie in "
            f"[0, 1], got {alpha}"
        )


def _maskrcnn_sections(sections: dict[str, Any]) -> dict[str, Any]:
    """The oracle learns the ground truth: the pseudo-GT threshold does not concern it."""
    maskrcnn = sections["maskrcnn"]
    if maskrcnn["source"] == "gt":
        maskrcnn["pseudo_score_threshold"] = MaskRcnnConfig().pseudo_score_threshold
    return sections


def _maskrcnn_inputs(cfg: Config) -> list[str]:
    """Pseudo GT: the instance network's train predictions; the oracle reads the dataset only."""
    return ["dataset"] if cfg.maskrcnn.source == "gt" else ["dataset", "instance", "predict"]


# The wsss keys the raw CAM masks depend on; the rest only shape the retrained net.
CAM_MASK_KEYS = ("method", "scales", "flip", "background_threshold", "grabcut_iterations")


def _cam_masks(sections: dict[str, Any]) -> dict[str, Any]:
    """The raw CAM masks: the CAM keys of the wsss section, retraining off (others default)."""
    wsss = sections["wsss"]
    sections["wsss"] = {key: wsss[key] for key in CAM_MASK_KEYS} | {"retrain": False}
    return sections


# The wsss keys each method reads when no segmentation net is retrained.
MAP_KEYS = {"cam": CAM_MASK_KEYS, "external": ("method", "external_dir"), "gt": ("method",)}


def _wsss_maps(sections: dict[str, Any]) -> dict[str, Any]:
    """Without retraining the maps depend on their method's keys only: not on the seed nor
    the segmentation-net recipe (changing those reruns nothing)."""
    wsss = sections["wsss"]
    if wsss["method"] == "cam" and wsss["retrain"]:
        return sections
    return {"wsss": {key: wsss[key] for key in MAP_KEYS[wsss["method"]]} | {"retrain": False}}


STAGES: dict[str, Stage] = {
    "dataset": Stage(("dataset",), lambda cfg: []),
    "classifier_pam": Stage(
        ("classifier", "seed"),
        lambda cfg: ["dataset", "classifier_cam"] if _pam_fine_tuned(cfg) else ["dataset"],
        _pam_classifier,
    ),
    "classifier_cam": Stage(("classifier", "seed"), lambda cfg: ["dataset"], _cam_classifier),
    "wsss": Stage(("wsss", "seed"), _wsss_inputs, _wsss_maps),
    # The raw CAM masks that the retrained net learns from (wsss/cam/{split}/).
    "wsss_cam": Stage(("wsss",), lambda cfg: ["dataset", "classifier_cam"], _cam_masks),
    "cues": Stage(("cues", "supervision", "shards"), _cue_inputs),
    # Cue statistics read pseudo.cue_threshold (the training cut); a stage of their own so a
    # change of the pseudo section re-scores the cues without re-extracting them.
    "cues_stats": Stage(("pseudo",), lambda cfg: ["dataset", "cues"]),
    "instance": Stage(
        ("instance", "refine", "loss", "pseudo", "seed", "supervision", "decode"),
        lambda cfg: ["dataset", "pseudo", "wsss"],
        _instance_sections,
    ),
    "predict": Stage(("decode",), lambda cfg: ["dataset", "instance"]),
    # Mask R-CNN: pseudo_gt_train.json, model.pt (maskrcnn.source gt: trained on the GT).
    "maskrcnn": Stage(("maskrcnn", "seed"), _maskrcnn_inputs, _maskrcnn_sections),
    "curve": Stage(("decode", "evaluation"), lambda cfg: ["dataset", "instance"]),
    "evaluation": Stage(("evaluation",), lambda cfg: ["dataset"]),
    "pseudo": Stage(("pseudo", "supervision"), lambda cfg: ["dataset", "cues", "wsss"]),
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``override`` merged in (mappings recursively, others replaced)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class Experiments:
    """The experiments of one config and the owner of every (experiment, stage) artifact."""

    def __init__(self, raw: dict[str, Any]) -> None:
        raw = copy.deepcopy(raw or {})
        variants = raw.pop("experiments", None) or {DEFAULT_EXPERIMENT: {}}
        seeds = raw.pop("seeds", None) or []
        base = to_dict(from_dict(Config, raw))
        self.configs: dict[str, Config] = {}
        for name, overrides in variants.items():
            if not isinstance(overrides, dict):
                raise ConfigError(f"config key 'experiments.{name}': expected a mapping")
            for key in ("experiments", "seeds"):
                if key in (overrides or {}):
                    raise ConfigError(f"config key 'experiments.{name}.{key}' is not allowed")
            merged = deep_merge(base, overrides or {})
            for seed in seeds or [None]:
                label = name if seed is None else f"{name}_seed{seed}"
                data = merged if seed is None else deep_merge(merged, {"seed": seed})
                self.configs[label] = from_dict(Config, data, f"experiments.{name}")
                check(self.configs[label], label)
        self._keys: dict[tuple[str, str], str] = {}

    @property
    def names(self) -> list[str]:
        return list(self.configs)

    def sections(self, name: str, stage: str) -> dict[str, Any]:
        """The config sections stage ``stage`` of experiment ``name`` reads, as plain data."""
        spec = STAGES[stage]
        data = to_dict(self.configs[name])
        sections = {section: copy.deepcopy(data[section]) for section in spec.sections}
        return spec.adjust(sections) if spec.adjust else sections

    def inputs(self, name: str, stage: str) -> list[str]:
        return STAGES[stage].inputs(self.configs[name])

    def key(self, name: str, stage: str) -> str:
        """Hash of the stage's sections and its upstream stages' keys."""
        if (name, stage) not in self._keys:
            upstream = {up: self.key(name, up) for up in self.inputs(name, stage)}
            payload = json.dumps([stage, self.sections(name, stage), upstream], sort_keys=True)
            self._keys[name, stage] = hashlib.sha1(payload.encode()).hexdigest()[:12]
        return self._keys[name, stage]

    def owner(self, name: str, stage: str) -> str:
        """The first experiment whose artifact for ``stage`` equals ``name``'s."""
        if name not in self.configs:
            raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(self.configs)}")
        key = self.key(name, stage)
        return next(other for other in self.configs if self.key(other, stage) == key)

    def stage_json(self, name: str, stage: str) -> str:
        """The stage's sections as compact JSON, passed to ``python -m bestie <stage>``."""
        return json.dumps(self.sections(name, stage), sort_keys=True, separators=(",", ":"))
