"""Config loading: every dataclass, unknown keys, wrong types, the generated schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bestie.config import Config, ConfigError, from_dict, load_sections, to_dict
from bestie.experiments import Experiments
from bestie.stages import schema

ROOT = Path(__file__).resolve().parents[2]


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize(
    "path", sorted((ROOT / "config").glob("*.yaml")) + [ROOT / "tests/workflow/config.yaml"]
)
def test_shipped_configs_load_into_every_dataclass(path: Path) -> None:
    experiments = Experiments(load_yaml(path))
    assert experiments.names
    for name in experiments.names:
        assert isinstance(experiments.configs[name], Config)


def test_defaults_are_the_official_values() -> None:
    config = Config()
    assert config.classifier.pam_alpha == 0.7
    assert config.cues.peak_kernel == 15 and config.cues.top_k == 25
    assert config.pseudo.cue_threshold == 0.7 and config.pseudo.min_area == 50
    assert config.refine.nms_kernel == 41 and config.decode.threshold == 0.1
    assert config.loss.center_weight == 200.0 and config.loss.combine == "mean"


def test_unknown_key_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"'classifier\.lrr'"):
        from_dict(Config, {"classifier": {"lrr": 0.1}})


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"classifier": {"lr": "fast"}}, r"classifier\.lr"),
        ({"shards": 2.5}, r"shards"),
        ({"refine": {"enabled": "yes"}}, r"refine\.enabled"),
        ({"cues": {"classifier": "vgg"}}, r"cues\.classifier"),
        ({"classifier": {"pam_layers": [1, "x"]}}, r"classifier\.pam_layers\[1\]"),
        ({"dataset": []}, r"dataset"),
    ],
)
def test_wrong_type_names_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        from_dict(Config, data)


def test_integers_are_accepted_as_floats() -> None:
    assert from_dict(Config, {"classifier": {"lr": 1}}).classifier.lr == 1.0


def test_generated_schema_is_up_to_date() -> None:
    committed = (ROOT / "workflow/schemas/config.schema.yaml").read_text()
    assert committed == schema.render(), "run: python -m bestie schema -o workflow/schemas/..."


def test_schema_rejects_unknown_key_and_wrong_type() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    document = yaml.safe_load(schema.render())
    validator = jsonschema.Draft202012Validator(document)
    assert not list(validator.iter_errors(load_yaml(ROOT / "config/config.yaml")))
    assert list(validator.iter_errors({"classifier": {"lrr": 1}}))
    assert list(validator.iter_errors({"classifier": {"lr": "x"}}))


def test_a_stage_cannot_read_a_section_it_did_not_declare() -> None:
    config = load_sections('{"cues": {"top_k": 3}}')
    assert config.cues.top_k == 3
    with pytest.raises(ConfigError, match="'instance'"):
        _ = config.instance.lr


# Sections a paper config sets on its own terms (its data, its experiments, its seed).
OWN_TERMS = {"supervision", "seed", "shards", "dataset", "experiments", "seeds", "report"}


@pytest.mark.parametrize("name", ["voc.yaml", "coco.yaml"])
def test_paper_configs_undo_every_cpu_shrink_of_the_default(name: str) -> None:
    """voc.yaml/coco.yaml merge over config.yaml: each key the synthetic default moves
    away from the official value (the dataclass default) must be set again by the paper config."""
    config_dir = ROOT / "config"
    default = yaml.safe_load((config_dir / "config.yaml").read_text())
    paper = yaml.safe_load((config_dir / name).read_text())
    official = to_dict(Config())
    inherited = [
        f"{section}.{key} = {value!r}"
        for section, keys in default.items()
        if section not in OWN_TERMS
        for key, value in keys.items()
        if value != official[section][key] and key not in (paper.get(section) or {})
    ]
    assert not inherited, f"config/{name} inherits the CPU default's {inherited}"
