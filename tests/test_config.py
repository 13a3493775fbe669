from pathlib import Path

import pytest

from selectflow.cli import SAMPLE_CONFIG
from selectflow.config import ConfigError, CurateConfig, NearDedupConfig, ProbeConfig, load_config


def test_sample_config_loads_and_resolves_paths():
    config = load_config(SAMPLE_CONFIG)
    specs = [*config.ingest.inputs, *config.reference, *config.probe.unseen]
    assert all(Path(spec.path).is_file() for spec in specs) and len(specs) == 8
    assert config.workspace.is_absolute()


def test_mixture_sample_config_loads():
    config = load_config(SAMPLE_CONFIG.with_name("sample-mixture.yaml"))
    assert [s.method for s in config.selection.selectors] == ["mixture", "dsir", "random"] and config.curriculum.enabled
    assert config.selection.selectors[1].quota == "mixture"
    assert all(Path(spec.path).is_file() for spec in [*config.ingest.inputs, *config.reference, *config.probe.unseen])


def test_mixture_and_curriculum_settings_are_checked(tmp_path):
    path = tmp_path / "c.yaml"
    base = "ingest: {inputs: [{path: data.jsonl}]}\nreference: [{path: ref.jsonl}]\n"
    path.write_text(base + "selection: {selectors: [{method: mixture, target: unseen}]}\n")
    with pytest.raises(ConfigError, match="mixture target 'unseen'.*probe.unseen"):
        load_config(path)
    path.write_text(base + "selection: {selectors: [{method: random}]}\ncurriculum: {enabled: true, subset: zip}\n")
    with pytest.raises(ConfigError, match="curriculum.subset 'zip' is not produced"):
        load_config(path)
    path.write_text(base + "selection: {budget_unit: tokens, selectors: [{method: zip, strata: domain, quota: mixture}]}"
                    "\n")
    with pytest.raises(ConfigError, match="add {method: mixture, components: domain}"):
        load_config(path)
    for method in ("dsir", "quad"):  # inside the mixture's quotas too, when the run searches a mixture
        selectors = f"{{method: {method}, strata: domain, quota: mixture}}"
        path.write_text(base + f"selection: {{selectors: [{selectors}]}}\n")
        with pytest.raises(ConfigError, match=f"{method} quota 'mixture' takes its quotas from the mixture selector"):
            load_config(path)
        path.write_text(base + f"selection: {{selectors: [{selectors}, {{method: mixture}}]}}\n")
        assert load_config(path).selection.selectors[0].quota == "mixture"
    path.write_text(base + "curriculum: {orders: [alphabetical]}\n")
    with pytest.raises(ConfigError, match="curriculum.orders"):
        load_config(path)


def test_model_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "c.yaml").write_text("ingest: {inputs: [{path: data.jsonl}]}\ninfluence: {model_path: models/ref}\n"
                                      "probe: {enabled: false, tokenizer: hf, tokenizer_path: tok}\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.influence.model_path == str(tmp_path / "models/ref")
    assert config.probe.tokenizer_path == str(tmp_path / "tok")


def test_probe_defaults_and_hf_only_options(tmp_path):
    config = load_config(SAMPLE_CONFIG)
    probe = config.probe
    assert probe.tokenizer == "bytes" and probe.short_subset == "shrink" and probe.seeds == 3
    assert probe.replicate_seeds == [probe.seed, probe.seed + 1, probe.seed + 2]
    assert ProbeConfig(seed=5, seeds=2).replicate_seeds == [5, 6]
    assert ProbeConfig().tokens == 1_048_576 and ProbeConfig().model.seq_len == 256
    path = tmp_path / "c.yaml"
    for field in ("tokenizer_path", "init_checkpoint"):
        path.write_text(f"ingest: {{inputs: [{{path: data.jsonl}}]}}\nprobe: {{enabled: false, {field}: x}}\n")
        with pytest.raises(ConfigError, match=f"probe.{field} needs a Hugging Face tokenizer; set probe.tokenizer: hf"):
            load_config(path)
    # replaced options are refused by name, not silently ignored
    for old in ("eval_every: 4", "tokenizer: sentencepiece", "seeds: 0"):
        path.write_text(f"ingest: {{inputs: [{{path: data.jsonl}}]}}\nprobe: {{enabled: false, {old}}}\n")
        with pytest.raises(ConfigError, match=old.split(":")[0]):
            load_config(path)
    path.write_text("ingest: {inputs: [{path: data.jsonl}]}\nprobe: {enabled: false}\nrisk: {ratio_tolerance: 0.02}\n")
    with pytest.raises(ConfigError, match="ratio_tolerance"):
        load_config(path)


def test_selectors_that_score_influence_need_a_reference_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ingest: {inputs: [{path: data.jsonl}]}\nprobe: {enabled: false}\n"
                    "selection: {selectors: [{method: quad}]}\n")
    with pytest.raises(ConfigError, match=r"reference: selectors \['quad'\].*add `reference"):
        load_config(path)
    path.write_text("ingest: {inputs: [{path: data.jsonl}]}\n")
    with pytest.raises(ConfigError, match="probes report held-out loss on the reference"):
        load_config(path)


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


def test_the_prefect_form_shows_what_a_run_is_about_first():
    from prefect.utilities.callables import parameter_schema

    from selectflow.config import CurateConfig
    from selectflow.flows.curate import curate

    schema = parameter_schema(curate.fn).model_dump()["definitions"]["CurateConfig"]
    properties = schema["properties"]
    assert all("position" in properties[name] for name in CurateConfig.model_fields)  # a new field gets a place
    order = sorted(properties, key=lambda name: properties[name]["position"])
    assert order[:5] == ["ingest", "reference", "selection", "probe", "risk"]
    assert "load_config" not in schema["description"]  # the form's heading speaks to its users
