"""Experiment variants share the artifacts whose config and inputs are equal."""

from __future__ import annotations

import pytest

from bestie.config import ConfigError
from bestie.experiments import Experiments, deep_merge


def test_deep_merge_replaces_leaves_and_keeps_siblings() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    assert deep_merge(base, {"a": {"c": [5]}}) == {"a": {"b": 1, "c": [5]}, "d": 3}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 3}


def test_default_experiment_when_none_are_named() -> None:
    assert Experiments({}).names == ["bestie"]


def test_owners_follow_the_changed_section_and_its_dependents() -> None:
    experiments = Experiments(
        {
            "experiments": {
                "bestie": {},
                "cam_cues": {"cues": {"classifier": "cam"}},
                "pam_last": {"classifier": {"pam_layers": [3]}},
                "other_data": {"dataset": {"synthetic": {"seed": 5}}},
            }
        }
    )
    owner = experiments.owner
    # the classifier is trained once for the cue variants
    assert owner("cam_cues", "classifier_pam") == "bestie"
    assert owner("cam_cues", "cues") == "cam_cues"
    # a PAM placement variant retrains the PAM classifier only; the CAM one is shared
    assert owner("pam_last", "classifier_pam") == "pam_last"
    assert owner("pam_last", "classifier_cam") == "bestie"
    assert owner("pam_last", "cues") == "pam_last"
    # other data: nothing is shared
    for stage in ("dataset", "classifier_pam", "classifier_cam", "cues"):
        assert owner("other_data", stage) == "other_data"


def test_seeds_repeat_every_experiment() -> None:
    experiments = Experiments({"seeds": [1, 2], "experiments": {"a": {}, "b": {"seed": 9}}})
    assert experiments.names == ["a_seed1", "a_seed2", "b_seed1", "b_seed2"]
    assert experiments.configs["b_seed2"].seed == 2
    # the data set does not depend on the training seed
    assert experiments.owner("b_seed2", "dataset") == "a_seed1"
    assert experiments.owner("b_seed2", "classifier_pam") == "a_seed2"


def test_bad_variant_names_the_experiment() -> None:
    with pytest.raises(ConfigError, match=r"experiments\.x"):
        Experiments({"experiments": {"x": {"classifier": {"lr": "fast"}}}})
    with pytest.raises(ConfigError, match=r"experiment y: 'cues.pam_alpha'.*got 1.5"):
        Experiments({"experiments": {"y": {"cues": {"pam_alpha": 1.5}}}})
    assert Experiments({"experiments": {"z": {"cues": {"pam_alpha": 0}}}}).names == ["z"]
    with pytest.raises(ConfigError, match="unknown experiment"):
        Experiments({}).owner("nope", "dataset")


def test_pam_fine_tuned_from_cam_reads_the_cam_classifier_and_its_own_recipe() -> None:
    experiments = Experiments(
        {
            "classifier": {"epochs": 20, "lr": 0.01, "lr_steps": [14]},
            "experiments": {
                "scratch": {},
                "tuned": {"classifier": {"pam_init": "cam", "pam_epochs": 4, "pam_lr": 0.002}},
                "tuned_cam": {
                    "classifier": {"pam_init": "cam", "pam_epochs": 4, "pam_lr": 0.002},
                    "cues": {"classifier": "cam"},
                },
            },
        }
    )
    assert experiments.inputs("scratch", "classifier_pam") == ["dataset"]
    assert experiments.inputs("tuned", "classifier_pam") == ["dataset", "classifier_cam"]
    pam = experiments.sections("tuned", "classifier_pam")["classifier"]
    assert (pam["epochs"], pam["lr"], pam["lr_steps"]) == (4, 0.002, [])
    # the CAM classifier ignores the PAM-only keys: it is trained once for all three
    assert experiments.owner("tuned", "classifier_cam") == "scratch"
    cam = experiments.sections("tuned", "classifier_cam")["classifier"]
    assert (cam["epochs"], cam["lr"], cam["pam_layers"], cam["pam_init"]) == (20, 0.01, [], "")
    assert experiments.owner("tuned", "classifier_pam") == "tuned"
    assert experiments.owner("tuned_cam", "classifier_pam") == "tuned"


def test_the_oracle_ignores_the_pseudo_gt_threshold() -> None:
    experiments = Experiments(
        {
            "maskrcnn": {"pseudo_score_threshold": 0.5},
            "experiments": {
                "bestie": {},
                "oracle": {"maskrcnn": {"source": "gt"}},
                "oracle_2": {"maskrcnn": {"source": "gt", "pseudo_score_threshold": 0.9}},
            },
        }
    )
    assert experiments.sections("oracle", "maskrcnn")["maskrcnn"]["pseudo_score_threshold"] == 0.3
    assert experiments.sections("bestie", "maskrcnn")["maskrcnn"]["pseudo_score_threshold"] == 0.5
    assert experiments.owner("oracle_2", "maskrcnn") == "oracle"
    assert experiments.owner("bestie", "maskrcnn") == "bestie"


def test_maps_without_retraining_ignore_the_segnet_recipe_and_the_seed() -> None:
    experiments = Experiments(
        {
            "wsss": {"retrain": False},
            "seeds": [0, 1],
            "experiments": {
                "cam": {},
                "cam_adam": {"wsss": {"optimizer": "adam", "lr": 0.1}},
                "retrain": {"wsss": {"retrain": True}},
                "retrain_adam": {"wsss": {"retrain": True, "optimizer": "adam"}},
                "gt": {"wsss": {"method": "gt"}},
            },
        }
    )
    owner = experiments.owner
    assert owner("cam_adam_seed0", "wsss") == "cam_seed0"
    assert owner("cam_adam_seed1", "wsss") == "cam_seed1"  # its CAM classifier has the seed
    assert owner("retrain_seed0", "wsss") == "retrain_seed0"
    assert owner("retrain_adam_seed0", "wsss") == "retrain_adam_seed0"
    assert owner("retrain_seed1", "wsss") == "retrain_seed1"
    assert owner("gt_seed1", "wsss") == "gt_seed0"  # GT maps depend on neither
