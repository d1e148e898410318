"""Sweeps: strict sweep files, grid points, restartable runs with failures recorded."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("papermill")

from stlib.sweep import (  # noqa: E402
    SWEEP_DIR, SweepError, load_sweep, read_status, run_sweep, select)

REPO = Path(__file__).resolve().parents[1]
ARCH = "architecture_reproduction"  # the study that notebook writes to


def _write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_unknown_sweep_key_names_the_valid_keys(tmp_path):
    path = _write(tmp_path, {"notebook": "neuron_test", "study": "s", "gird": {"neuron": ["LIF"]}})
    expected = r"unknown key 'gird'; did you mean 'grid'.*notebook.*fixed"
    with pytest.raises(SweepError, match=expected):
        load_sweep(path)


def test_missing_notebook_and_bad_axis_are_refused(tmp_path):
    with pytest.raises(SweepError, match="'notebook' is required"):
        load_sweep(_write(tmp_path, {"study": "s"}))
    with pytest.raises(SweepError, match="axis 'neuron' must be a non-empty list"):
        load_sweep(_write(tmp_path, {"notebook": "neuron_test", "study": "s",
                                     "grid": {"neuron": "LIF"}}))


def test_parameter_the_notebook_lacks_is_refused(tmp_path):
    path = _write(tmp_path, {"notebook": "neuron_test", "study": "s",
                             "grid": {"nueron": ["LIF", "PLIF"]}})
    with pytest.raises(SweepError, match="nueron.*did you mean 'neuron'"):
        load_sweep(path)


def test_study_must_match_the_notebooks(tmp_path):
    path = _write(tmp_path, {"notebook": "neuron_test", "study": "neurons",
                             "grid": {"neuron": ["LIF"]}})
    with pytest.raises(SweepError, match="study 'neurons' is not the study.*neuron_test"):
        load_sweep(path)


def test_points_are_the_grid_product_with_mapping_axes(tmp_path):
    path = _write(tmp_path, {
        "notebook": "neuron_test", "study": "neuron_test", "fixed": {"seed": 3},
        "grid": {"model": [{"model": "spikformer_4_384", "params_file": "a.yaml"},
                           {"model": "sdt_2_512", "params_file": "b.yaml"}],
                 "neuron": ["LIF", "PLIF", "KLIF"]}})
    points = load_sweep(path).points()
    assert len(points) == 6
    name, params = points[4]
    assert name == "model-sdt_2_512__neuron-PLIF"
    assert params == {"seed": 3, "model": "sdt_2_512", "params_file": "b.yaml", "neuron": "PLIF"}
    chosen = select(points, ["neuron=LIF", "neuron=KLIF", "model=sdt_2_512"])
    assert [n for n, _ in chosen] == ["model-sdt_2_512__neuron-LIF", "model-sdt_2_512__neuron-KLIF"]


def test_points_sharing_a_name_are_refused(tmp_path):
    # a mapping labelled by its axis key: both points would be "surrogate-sigmoid"
    path = _write(tmp_path, {
        "notebook": "surrogate_test", "study": "surrogate_test",
        "grid": {"surrogate": [{"surrogate": "sigmoid", "alpha": 4.0},
                               {"surrogate": "sigmoid", "alpha": 2.0}]}})
    with pytest.raises(SweepError, match="share the name surrogate-sigmoid"):
        load_sweep(path)


def test_surrogate_sweep_is_steps_table():
    from stlib.sweep import predicted_config

    sweep = load_sweep(SWEEP_DIR / "surrogate_test.yaml")
    configs = [predicted_config(sweep, params) for _, params in sweep.points()]
    cells = {(c.model.name, c.neuron.surrogate, c.neuron.alpha) for c in configs}
    assert cells == {(m, s, a) for m in ("spikformer_4_384", "sdt_2_512")
                     for s in ("sigmoid", "triangle") for a in (4.0, 2.0)}
    assert {(c.neuron.type, c.experiment.seed) for c in configs} == {("LIF", 42)}
    assert len({c.run_dir for c in configs}) == 8  # one run folder per cell


@pytest.mark.parametrize("path", sorted(SWEEP_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_repository_sweeps_load(path):
    notebook = yaml.safe_load(path.read_text())["notebook"]
    if not (REPO / "notebooks" / f"{notebook}.ipynb").is_file():
        pytest.skip(f"notebooks/{notebook}.ipynb is not written yet")
    sweep = load_sweep(path)
    assert sweep.points() and sweep.description


def test_unregistered_model_is_a_recorded_failure(tmp_path):
    path = _write(tmp_path, {"notebook": "architecture_reproduction", "study": ARCH,
                             "grid": {"model": ["not_a_model_yet"]}})
    rows = run_sweep(path, output_dir=tmp_path, log=lambda *_: None)
    row = rows["model-not_a_model_yet"]
    assert row["status"] == "failed"
    assert "not registered" in row["error"] and "spikformer_4_384" in row["error"]
    saved = read_status(tmp_path / ARCH / "sweep_status.csv")
    assert saved["model-not_a_model_yet"]["status"] == "failed"
    assert not (tmp_path / ARCH / "notebooks").exists(), "no notebook runs for a failed check"


@pytest.mark.slow
def test_quick_sweep_runs_skips_and_records_failures(tmp_path, monkeypatch):
    # the kernel shares 2 cores with other work: one OpenMP thread avoids spin-waiting
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)  # notebooks run in the repo root; the sweep may start anywhere
    path = _write(tmp_path, {"notebook": "neuron_test", "study": "neuron_test",
                             "fixed": {"epochs": 2, "device": "cpu"},
                             "grid": {"neuron": ["LIF", "NoSuchNeuron", "IFSoft"]}})
    out = tmp_path / "outputs"
    log = []
    # a sweep "killed" after its first point: only LIF has run
    first = run_sweep(path, preset="quick", output_dir=out, only=["neuron=LIF"], log=log.append)
    assert [r["status"] for r in first.values()] == ["finished"]
    # restarting runs the rest, skipping LIF and recording the bad neuron
    rows = run_sweep(path, preset="quick", output_dir=out, log=log.append)
    assert {n: r["status"] for n, r in rows.items()} == {
        "neuron-LIF": "skipped", "neuron-NoSuchNeuron": "failed", "neuron-IFSoft": "finished"}
    assert "NoSuchNeuron" in rows["neuron-NoSuchNeuron"]["error"]
    for name in ("neuron-LIF", "neuron-IFSoft"):
        assert (out / "neuron_test" / "notebooks" / f"{name}.ipynb").is_file()
        summary = json.loads((Path(rows[name]["run_dir"]) / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["epochs_done"] == 2
        assert summary["dataset"] == "digits"
    with (out / "neuron_test" / "sweep_status.csv").open() as f:
        saved = list(csv.DictReader(f))
    assert [r["point"] for r in saved] == ["neuron-LIF", "neuron-NoSuchNeuron", "neuron-IFSoft"]
    # the results notebook renders the quick sweep's runs into the neuron-test table
    # (on digits, so beside no published number)
    from stlib.analysis import results
    from stlib.notebooks import run_notebook

    table = results.make_table(results.collect(out), "neuron_test")
    mine = table[table.dataset == "digits"]
    assert sorted(mine.neuron) == ["IFSoft", "LIF"] and (mine.ours > 10).all()
    rendered = tmp_path / "results"
    run_notebook("results", tmp_path / "results.ipynb", outputs_dir=str(out),
                 results_dir=str(rendered))
    markdown = (rendered / "neuron_test.md").read_text()
    quick = "spikformer_4_384 [depth=1, embed_dim=64, num_heads=4]"  # never the published row
    assert f"| {quick} | IFSoft | digits |" in markdown
    assert f"| {quick} | LIF | digits |" in markdown
    assert (rendered / "neuron_test.png").is_file()
    # a third run trains nothing
    again = run_sweep(path, preset="quick", output_dir=out, log=log.append)
    assert [r["status"] for r in again.values()] == ["skipped", "failed", "skipped"]
    assert float(again["neuron-IFSoft"]["seconds"]) < 30


def test_list_shows_each_point_state_without_running(tmp_path, capsys):
    from stlib.sweep import main

    path = _write(tmp_path, {"notebook": "architecture_reproduction", "study": ARCH,
                             "grid": {"model": ["spikformer_4_384", "not_a_model_yet"]}})
    code = main([str(path), "--preset", "quick", "--output-dir", str(tmp_path), "--list"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("model-spikformer_4_384\tto run (new)\t" + str(tmp_path / ARCH))
    assert lines[1].startswith("model-not_a_model_yet\terror\t") and "not registered" in lines[1]
    assert not (tmp_path / ARCH).exists(), "--list writes nothing"
    assert main([str(path), "--set", "nueron=LIF"]) == 2
    assert "did you mean 'neuron'" in capsys.readouterr().err
