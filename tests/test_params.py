"""stlib.params: YAML -> typed config, inheritance, presets, overrides, clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stlib.params import (ConfigError, build_config, from_notebook, list_presets, load_params,
                          parse_overrides)

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_seed_params_file_holds_the_spikformer_cifar_recipe():
    config = load_params("params/spikformer/cifar10.yaml")
    assert config.model.name == "spikformer_4_384" and config.model.T == 4
    assert config.data.name == "cifar10" and config.data.batch_size == 128
    assert config.train.epochs == 400 and config.train.cooldown_epochs == 10
    assert (config.train.lr, config.train.weight_decay) == (5e-4, 0.06)
    assert (config.train.warmup_epochs, config.train.warmup_lr, config.train.min_lr) == (20, 1e-5, 1e-5)
    assert (config.train.mixup, config.train.mixup_off_epoch, config.train.smoothing) == (0.5, 200, 0.1)
    assert config.data.re_prob == 0.25 and config.data.auto_augment.startswith("rand-m9")
    assert config.neuron.type == "LIF" and config.neuron.detach_reset is True


def test_base_inheritance_merges_sections(tmp_path):
    write(tmp_path / "parent.yaml", {"data": {"name": "mnist", "batch_size": 7},
                                     "train": {"epochs": 3}})
    write(tmp_path / "child.yaml", {"base": "parent.yaml", "data": {"batch_size": 9}})
    config = load_params(tmp_path / "child.yaml")
    assert config.data.name == "mnist"  # inherited
    assert config.data.batch_size == 9  # overridden
    assert config.train.epochs == 3


def test_cifar100_inherits_the_cifar10_recipe():
    config = load_params("params/spikformer/cifar100.yaml")
    assert config.data.name == "cifar100" and config.train.epochs == 400


def test_circular_base_is_refused(tmp_path):
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="circular"):
        load_params(tmp_path / "a.yaml")


def test_preset_then_overrides_win_in_order():
    config = load_params("params/spikformer/cifar10.yaml", preset="quick",
                         overrides=["train.epochs=5", "neuron.type=PLIF", "train.lr=1e-3"])
    assert config.data.name == "digits"  # from the preset
    assert config.train.epochs == 5 and config.neuron.type == "PLIF"
    assert config.train.lr == pytest.approx(1e-3) and isinstance(config.train.lr, float)
    assert config.model.kwargs["depth"] == 1


def test_overrides_parse_yaml_scalars_and_nested_keys():
    assert parse_overrides(["model.kwargs.depth=2", "data.img_size=null", "train.amp=false"]) == {
        "model": {"kwargs": {"depth": 2}}, "data": {"img_size": None}, "train": {"amp": False}}
    assert parse_overrides({"train.epochs": 3}) == {"train": {"epochs": 3}}


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError) as err:
        load_params("params/spikformer/cifar10.yaml", overrides=["train.epoch=5"])
    assert "train.epoch" in str(err.value) and "'train.epochs'" in str(err.value)


def test_unknown_yaml_key_in_a_file(tmp_path):
    write(tmp_path / "bad.yaml", {"neuron": {"typ": "LIF"}})
    with pytest.raises(ConfigError, match=r"neuron\.typ.*did you mean 'neuron\.type'"):
        load_params(tmp_path / "bad.yaml")


def test_unknown_section():
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        build_config({"trian": {"epochs": 1}})


@pytest.mark.parametrize("override, key", [
    ("train.epochs=five", "train.epochs must be int"),
    ("data.batch_size=1.5", "data.batch_size must be int"),
    ("train.amp=yes please", "train.amp must be bool"),
    ("model.T=0", "model.T must be a positive"),
    ("model.T=-2", "model.T must be a positive"),
])
def test_wrong_types_and_values_are_one_clear_error(override, key):
    with pytest.raises(ConfigError, match=key):
        load_params("params/spikformer/cifar10.yaml", overrides=[override])


def test_missing_params_file_lists_available_ones():
    with pytest.raises(ConfigError) as err:
        load_params("params/spikformer/cifar1O.yaml")
    assert "not found" in str(err.value) and "params/spikformer/cifar10.yaml" in str(err.value)


def test_unknown_preset_suggests_and_lists():
    assert "quick" in list_presets()
    with pytest.raises(ConfigError, match="unknown preset 'quik'; did you mean 'quick'"):
        load_params("params/spikformer/cifar10.yaml", preset="quik")


def test_run_id_is_stable_and_tracks_results_relevant_settings():
    a = load_params("params/spikformer/cifar10.yaml", preset="quick")
    b = load_params("params/spikformer/cifar10.yaml", preset="quick")
    assert a.run_id == b.run_id
    moved = load_params("params/spikformer/cifar10.yaml", preset="quick",
                        overrides=["experiment.output_dir=/elsewhere", "data.num_workers=3"])
    assert moved.config_hash == a.config_hash  # where it is written does not change results
    other_seed = load_params("params/spikformer/cifar10.yaml", preset="quick",
                             overrides=["experiment.seed=1"])
    other_alpha = load_params("params/spikformer/cifar10.yaml", preset="quick",
                              overrides=["neuron.alpha=2.0"])
    assert len({a.run_id, other_seed.run_id, other_alpha.run_id}) == 3


def test_saved_config_round_trips(tmp_path):
    config = load_params("params/spikformer/cifar10.yaml", preset="quick",
                         overrides=["neuron.type=CLIF"])
    config.save(tmp_path / "config.yaml")
    again = load_params(tmp_path / "config.yaml")
    assert again.to_dict() == config.to_dict() and again.config_hash == config.config_hash


def test_from_notebook_maps_plain_parameters_and_ignores_empty_ones():
    config = from_notebook("params/spikformer/cifar10.yaml", "quick", neuron="PLIF", epochs=None,
                           model="", seed=3, study="neuron_test")
    assert config.neuron.type == "PLIF" and config.experiment.seed == 3
    assert config.train.epochs == load_params(preset="quick", path="params/spikformer/cifar10.yaml").train.epochs
    assert config.model.name == "spikformer_4_384" and config.experiment.study == "neuron_test"
    with pytest.raises(ConfigError, match="notebook parameter 'nueron'"):
        from_notebook("params/spikformer/cifar10.yaml", nueron="PLIF")


def test_params_file_found_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # papermill may run a notebook from anywhere
    assert load_params("params/spikformer/cifar10.yaml").model.name == "spikformer_4_384"


def test_from_notebook_refuses_a_full_recipe_on_the_cpu_unless_asked(tmp_path):
    full = dict(device="cpu", output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"full recipe \(410 epochs of cifar10\).*CPU"):
        from_notebook("params/spikformer/cifar10.yaml", "", **full)
    # each of these is an explicit choice, so it goes through
    assert from_notebook("params/spikformer/cifar10.yaml", "", confirm_full_run=True,
                         **full).train.epochs == 400
    assert from_notebook("params/spikformer/cifar10.yaml", "", epochs=2, **full).train.epochs == 2
    assert from_notebook("params/spikformer/cifar10.yaml", "quick", **full).data.name == "digits"


def test_relative_outputs_and_data_resolve_against_the_project_home(tmp_path, monkeypatch):
    from stlib.config import project_home

    monkeypatch.delenv("STLIB_HOME", raising=False)
    monkeypatch.chdir(tmp_path)  # the working directory does not matter
    assert project_home() == REPO
    config = load_params("params/spikformer/cifar10.yaml")
    assert config.run_dir.parent.parent == REPO / "outputs"
    monkeypatch.setenv("STLIB_HOME", str(tmp_path / "home"))
    assert config.run_dir.parent.parent == tmp_path / "home" / "outputs"
