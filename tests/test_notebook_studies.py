"""The encoding-test and IF-threshold notebooks run under papermill on the quick preset."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stlib.params import from_notebook

REPO = Path(__file__).resolve().parents[1]


def _run(notebook: str, out: Path, **params):
    from stlib.notebooks import run_notebook

    return run_notebook(notebook, out, cwd=REPO, **params)


@pytest.mark.slow
def test_encoding_notebook_quick_rate(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # see test_notebooks.py: no oversubscription
    params = dict(encoding="rate", preset="quick", epochs=2, device="cpu",
                  output_dir=str(tmp_path / "outputs"))
    _run("encoding_test", tmp_path / "enc.ipynb", **params)
    config = from_notebook("params/spikformer/cifar10.yaml", "quick", encoding="rate",
                           model="spikformer_4_384", epochs=2, seed=0, device="cpu",
                           output_dir=params["output_dir"], study="encoding_test")
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert summary["encoding"] == "rate" and summary["status"] == "finished"
    assert summary["final_acc1"] > 20.0, summary  # 10 digits: well above chance


def _one_quick_run(study: str, tmp_path: Path, **params) -> tuple[Path, dict]:
    """Run ``notebooks/<study>.ipynb`` for one epoch of the quick preset; its only run folder
    (finished) and its saved config."""
    _run(study, tmp_path / f"{study}.ipynb", preset="quick", epochs=1, device="cpu",
         output_dir=str(tmp_path / "outputs"), **params)
    run_dirs = list((tmp_path / "outputs" / study).iterdir())
    assert len(run_dirs) == 1
    assert json.loads((run_dirs[0] / "summary.json").read_text())["status"] == "finished"
    return run_dirs[0], yaml.safe_load((run_dirs[0] / "config.yaml").read_text())


@pytest.mark.slow
def test_if_threshold_notebook_sets_the_threshold(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _, saved = _one_quick_run("if_threshold_test", tmp_path, neuron="IFSoft", v_threshold=0.8)
    assert saved["neuron"]["type"] == "IFSoft" and saved["neuron"]["v_threshold"] == 0.8
    assert saved["experiment"]["seed"] == 2  # the study's seed


@pytest.mark.slow
def test_surrogate_notebook_reaches_every_neuron(tmp_path, monkeypatch):
    """The reference benchmark's surrogate setting never reached its neurons: here the run's
    config carries it and every neuron of the model built from that config uses it."""
    pytest.importorskip("papermill")
    from stlib.data.base import build_dataloaders
    from stlib.neurons import neurons_of
    from stlib.neurons.surrogate import Triangle
    from stlib.params import load_params
    from stlib.train import build_model

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_dir, saved = _one_quick_run("surrogate_test", tmp_path, surrogate="triangle", alpha=2.0)
    assert saved["neuron"]["surrogate"] == "triangle" and saved["neuron"]["alpha"] == 2.0
    assert saved["experiment"]["seed"] == 42 and saved["neuron"]["type"] == "LIF"
    config = load_params(run_dir / "config.yaml")
    model = build_model(config, build_dataloaders(config.data, seed=0))  # as fit() builds it
    surrogates = [n.surrogate for _, n in neurons_of(model)]
    assert surrogates and all(isinstance(s, Triangle) and s.alpha == 2.0 for s in surrogates)


def test_unknown_encoding_is_refused_before_training(tmp_path):
    pytest.importorskip("papermill")
    from stlib.sweep import Sweep, predicted_config

    sweep = Sweep(notebook="encoding_test", study="encoding_test")
    with pytest.raises(ValueError, match="unknown encoding 'bitplane'.*rate"):
        predicted_config(sweep, {"encoding": "bitplane", "preset": "quick"})
