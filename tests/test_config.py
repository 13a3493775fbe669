import pytest

from selectflow.cli import SAMPLE_CONFIG
from selectflow.config import ConfigError, CurateConfig, NearDedupConfig, load_config


def test_sample_config_loads_and_resolves_paths():
    config = load_config(SAMPLE_CONFIG)
    assert all(spec.path.startswith("/") for spec in config.ingest.inputs)
    assert config.workspace.is_absolute()


def test_overrides_are_typed(tmp_path):
    config = load_config(SAMPLE_CONFIG, {"dedup.near.threshold": "0.85", "dask.processes": "false"})
    assert config.dedup.near.threshold == 0.85 and config.dask.processes is False


def test_bands_times_rows_must_cover_signature():
    with pytest.raises(ValueError, match="bands .* must equal num_perm"):
        NearDedupConfig(num_perm=128, bands=10, rows=8)


def test_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  inputs: []\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*ingest\.inputs: List should have at least 1 item"):
        load_config(bad)
    bad.write_text("ingest:\n  inputs: [{path: x}]\n  shard_rowz: 5\n")
    with pytest.raises(ConfigError, match="shard_rowz"):
        load_config(bad)
    bad.write_text("ingest: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_is_parsed_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("ingest: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)


def test_schema_has_descriptions_for_the_ui():
    schema = CurateConfig.model_json_schema()
    near = schema["$defs"]["NearDedupConfig"]["properties"]
    assert all("description" in field for field in near.values())
