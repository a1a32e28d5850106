from pathlib import Path

import pytest
import yaml

from ray_jobs.config import ConfigError, apply_override, load_config, resolved_yaml


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def base(tmp_path: Path) -> dict:
    return {"input": [{"kind": "folder", "path": str(tmp_path)}], "output": str(tmp_path / "out")}


def test_defaults_follow_the_paper(tmp_path):
    config = load_config(write(tmp_path, base(tmp_path)))
    assert config.filter.max_duration_s == 120
    assert config.filter.min_duration_s is None
    assert config.frames.every_s == 2.0


def test_single_input_mapping_becomes_a_list(tmp_path):
    data = base(tmp_path)
    data["input"] = data["input"][0]
    assert len(load_config(write(tmp_path, data)).input) == 1


def test_unknown_key_is_named(tmp_path):
    data = base(tmp_path)
    data["frames"] = {"every_sec": 2}
    with pytest.raises(ConfigError, match=r"frames\.every_sec: unknown key"):
        load_config(write(tmp_path, data))


def test_wrong_type_is_named_with_the_value(tmp_path):
    data = base(tmp_path)
    data["frames"] = {"every_s": "often"}
    with pytest.raises(ConfigError, match=r"frames\.every_s: .*'often'"):
        load_config(write(tmp_path, data))


def test_unknown_source_kind_is_named(tmp_path):
    data = base(tmp_path)
    data["input"] = [{"kind": "youtube", "path": "x"}]
    with pytest.raises(ConfigError, match=r"input\.0"):
        load_config(write(tmp_path, data))


def test_unknown_stage_override_is_named(tmp_path):
    data = base(tmp_path)
    data["stages"] = {"probbe": {"batch_size": 4}}
    with pytest.raises(ConfigError, match=r"stages\.probbe: unknown stage"):
        load_config(write(tmp_path, data))


def test_missing_required_key(tmp_path):
    data = base(tmp_path)
    del data["output"]
    with pytest.raises(ConfigError, match=r"output: Field required"):
        load_config(write(tmp_path, data))


def test_set_overrides_nested_values_with_yaml_types(tmp_path):
    config = load_config(write(tmp_path, base(tmp_path)), [
        "frames.every_s=1.5", "filter.min_duration_s=10", "stages.probe.batch_size=3",
        "input.0.recursive=false", "ray.num_gpus=2",
    ])
    assert config.frames.every_s == 1.5
    assert config.filter.min_duration_s == 10
    assert config.stages["probe"].batch_size == 3
    assert config.input[0].recursive is False
    assert config.ray.num_gpus == 2


def test_set_with_a_bad_key_or_value_fails_clearly(tmp_path):
    path = write(tmp_path, base(tmp_path))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(path, ["frames.every_s"])
    with pytest.raises(ConfigError, match=r"frames\.every_s"):
        load_config(path, ["frames.every_s=soon"])
    with pytest.raises(ConfigError, match="not an index"):
        load_config(path, ["input.5.path=/x"])
    raw = {"output": "x"}
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_override(raw, "output.path=y")


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_resolved_yaml_round_trips_and_masks_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-123456")
    config = load_config(write(tmp_path, base(tmp_path)))
    text = resolved_yaml(config)
    assert "sk-canary-123456" not in text
    again = load_config(yaml.safe_load(text))
    assert again == config
