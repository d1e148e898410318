"""Notebooks run for real under papermill on the quick preset (digits, CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import torch

from stlib.params import from_notebook

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def run_quick(notebook: str, tmp_path, monkeypatch, **parameters) -> dict:
    """Execute ``notebooks/<notebook>.ipynb`` under papermill (one OpenMP thread: the kernel
    shares the cores with the other xdist worker) with its run under ``tmp_path/outputs``;
    returns that run's summary.json."""
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "outputs"
    papermill.execute_notebook(str(REPO / f"notebooks/{notebook}.ipynb"),
                               str(tmp_path / f"{notebook}.ipynb"),
                               parameters={**parameters, "output_dir": str(out)},
                               kernel_name="python3", cwd=str(REPO), progress_bar=False)
    [summary] = list(out.rglob("summary.json"))  # exactly one run
    return json.loads(summary.read_text())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_clean_with_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit without outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert not any(line.lstrip().startswith(("def ", "class ")) for c in code
                   for line in c.source.splitlines()), "notebooks hold no logic"


@pytest.mark.slow
def test_neuron_test_notebook_quick_plif(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    # the kernel shares 2 cores with the other xdist worker: one OpenMP thread avoids the
    # spin-waiting of an oversubscribed thread pool (a 10x slowdown)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "neuron_test_PLIF.ipynb"
    params = dict(neuron="PLIF", preset="quick", output_dir=str(tmp_path / "outputs"))
    papermill.execute_notebook(str(REPO / "notebooks/neuron_test.ipynb"), str(out),
                               parameters=params, kernel_name="python3", cwd=str(REPO),
                               progress_bar=False)
    config = from_notebook("params/spikformer/cifar10.yaml", "quick", neuron="PLIF",
                           output_dir=params["output_dir"], study="neuron_test",
                           model="spikformer_4_384", seed=0, device="auto")
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert summary["neuron"] == "PLIF" and summary["dataset"] == "digits"
    assert summary["status"] == "finished" and summary["epochs_done"] == config.train.epochs
    assert summary["final_acc1"] >= 85.0, summary
    executed = nbformat.read(out, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert any(o.get("output_type") == "display_data" for c in executed.cells
               for o in c.get("outputs", [])), "the learning-curve figure was not drawn"


def test_unknown_notebook_parameter_is_refused(tmp_path):
    papermill = pytest.importorskip("papermill")
    from stlib.notebooks import run_notebook

    with pytest.raises(ValueError, match="nueron.*valid.*neuron"):
        run_notebook("neuron_test", tmp_path / "x.ipynb", nueron="PLIF")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["spikformer_4_384", "sdt_2_512"])
def test_architecture_notebook_quick(tmp_path, monkeypatch, model):
    from stlib.models import MODELS

    if model not in MODELS:
        pytest.skip(f"{model} is not registered")
    summary = run_quick("architecture_reproduction", tmp_path, monkeypatch, model=model,
                        dataset="cifar10", preset="quick", epochs=4)
    from stlib.params import params_for

    config = from_notebook(params_for(model, "cifar10"), "quick", epochs=4, seed=0, device="auto",
                           output_dir=str(tmp_path / "outputs"), study="architecture_reproduction")
    assert json.loads((config.run_dir / "summary.json").read_text()) == summary
    assert summary["model"] == model and summary["status"] == "finished"
    assert summary["final_acc1"] > 50.0, summary  # 10 classes: well above chance after 4 epochs


@pytest.mark.slow
def test_architecture_notebook_runs_event_data_unchanged(tmp_path, monkeypatch, shared_data):
    summary = run_quick("architecture_reproduction", tmp_path, monkeypatch,
                        model="spikformer_2_384", dataset="nmnist", preset="quick_events", epochs=4)
    assert summary["dataset"] == "nmnist" and summary["status"] == "finished"
    assert summary["final_acc1"] > 40.0, summary  # 10 classes, 4 epochs


@pytest.mark.slow
def test_sequential_notebook_quick_psmnist(tmp_path, monkeypatch, shared_data):
    summary = run_quick("sequential_classification", tmp_path, monkeypatch, dataset="psmnist",
                        preset="quick_sequential", epochs=4)
    assert summary["dataset"] == "psmnist" and summary["status"] == "finished"
    assert summary["sequence_order"]["order"] == "permuted"
    assert summary["final_acc1"] > 20.0, summary  # 10 classes: well above chance after 4 epochs


def spikformer_to_official_layout(state: dict) -> dict:
    """stlib Spikformer keys -> the CIFAR file of ZK-Zhou/spikformer (written out by hand here,
    independently of the loader's rules), plus its unused LayerNorms."""
    import re

    out = {}
    for key, value in state.items():
        key = re.sub(r"^net\.", "", key)
        key = re.sub(r"patch_embed\.stages\.0\.(conv|bn)\.", r"patch_embed.proj_\1.", key)
        key = re.sub(r"patch_embed\.stages\.(\d)\.(conv|bn)\.", r"patch_embed.proj_\2\1.", key)
        key = re.sub(r"patch_embed\.rpe\.(conv|bn)\.", r"patch_embed.rpe_\1.", key)
        key = re.sub(r"blocks\.(\d+)\.(attn|mlp)\.(\w+)\.(linear|bn)\.", r"block.\1.\2.\3_\4.", key)
        out[key.replace("head.fc.", "head.")] = value
    dim = out["head.weight"].shape[1]
    for name in {k.split(".attn.")[0] for k in out if ".attn." in k}:
        for norm in ("norm1", "norm2"):
            out[f"{name}.{norm}.weight"], out[f"{name}.{norm}.bias"] = torch.ones(dim), torch.zeros(dim)
    return out


@pytest.mark.slow
def test_architecture_notebook_evaluates_an_official_checkpoint(tmp_path, monkeypatch):
    """A checkpoint in the official layout is evaluated without training; the measured top-1
    equals what the run that trained it measured for the same weights."""
    import re

    import stlib

    papermill = pytest.importorskip("papermill")
    record = stlib.fit(stlib.load_params("params/spikformer/cifar10.yaml", preset="quick", overrides=[
        f"experiment.output_dir={tmp_path / 'train'}", "train.epochs=2", "train.progress=false"]))
    best = torch.load(record.run_dir / "checkpoints" / "best.pt", weights_only=True)["model"]
    official = tmp_path / "official.pth"
    torch.save({"model": {f"module.{k}": v for k, v in spikformer_to_official_layout(best).items()}},
               official)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks/architecture_reproduction.ipynb"), str(out),
                               parameters={"model": "spikformer_4_384", "dataset": "cifar10",
                                           "preset": "quick", "checkpoint": str(official),
                                           "output_dir": str(tmp_path / "eval")},
                               kernel_name="python3", cwd=str(REPO), progress_bar=False)
    text = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells
                   for o in c.get("outputs", []))
    measured = float(re.search(r"measured ([\d.]+) %", text).group(1))
    assert measured == pytest.approx(record.summary["best_acc1"], abs=0.01)
    assert not (tmp_path / "eval").exists() or not list((tmp_path / "eval").rglob("*.pt"))


@pytest.mark.slow
def test_a_lab_run_from_the_notebooks_folder_lands_in_the_repository_outputs(tmp_path, monkeypatch):
    """JupyterLab starts a notebook's kernel in notebooks/: its run must still land in the
    repository's outputs/ (where papermill runs and the results notebook look), not in
    notebooks/outputs/."""
    import shutil

    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("STLIB_HOME", raising=False)
    params = dict(neuron="IFSoft", epochs=1, seed=7_031_925)  # a seed nobody uses
    config = from_notebook("params/spikformer/cifar10.yaml", "quick", study="neuron_test",
                           model="spikformer_4_384", device="auto", **params)
    params["preset"] = "quick"
    assert config.run_dir.parent.parent == REPO / "outputs"
    existed = [p for p in (config.run_dir.parent, config.run_dir) if p.exists()]
    try:
        papermill.execute_notebook(str(REPO / "notebooks/neuron_test.ipynb"),
                                   str(tmp_path / "lab.ipynb"), parameters=params,
                                   kernel_name="python3", cwd=str(REPO / "notebooks"),
                                   progress_bar=False)
        summary = json.loads((config.run_dir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["epochs_done"] == 1
        assert not (REPO / "notebooks" / "outputs").exists()
        assert not (REPO / "notebooks" / "data").exists()
    finally:  # leave the repository's outputs/ as it was
        for path in (config.run_dir.parent, config.run_dir):
            if path not in existed:
                shutil.rmtree(path, ignore_errors=True)
                break


def _failing_cell(notebook: str, tmp_path, monkeypatch, **parameters):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(REPO / f"notebooks/{notebook}.ipynb"),
                                   str(tmp_path / "failed.ipynb"), parameters=parameters,
                                   kernel_name="python3", cwd=str(REPO), progress_bar=False)
    return err.value


def test_a_bad_setting_ends_a_notebook_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("STLIB_DEBUG", raising=False)
    err = _failing_cell("neuron_test", tmp_path, monkeypatch, neuron="LIFF", preset="quick")
    assert err.ename == "UnknownNameError" and "did you mean 'LIF'" in err.evalue
    assert len(err.traceback) == 2 and err.traceback[0].startswith("UnknownNameError: unknown")
    assert "%tb" in err.traceback[1]
    monkeypatch.setenv("STLIB_DEBUG", "1")  # the whole traceback on request
    err = _failing_cell("neuron_test", tmp_path, monkeypatch, neuron="LIFF", preset="quick")
    assert len(err.traceback) > 2


def test_run_all_without_a_preset_does_not_start_a_full_recipe_on_the_cpu(tmp_path, monkeypatch):
    err = _failing_cell("neuron_test", tmp_path, monkeypatch, device="cpu",
                        output_dir=str(tmp_path / "outputs"))
    assert err.ename == "ConfigError" and "410 epochs of cifar10" in err.evalue
    assert "preset" in err.evalue and "confirm_full_run = True" in err.evalue
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_architecture_notebook_converts_a_qcfs_checkpoint_to_an_snn(tmp_path, monkeypatch):
    """``-p snn_steps``: an MST checkpoint (a QCFS ANN) is evaluated as the ANN and as its
    converted SNN at each T, and the ANN row is the top-1 the checkpoint evaluation prints."""
    import re

    from stlib.build import build_model
    from stlib.data import build_dataloaders
    from stlib.params import load_params

    papermill = pytest.importorskip("papermill")
    config = load_params("params/mst/cifar10.yaml", preset="quick")
    torch.manual_seed(0)
    net = build_model(config, build_dataloaders(config.data, seed=0)).net
    torch.save({"model": net.state_dict()}, tmp_path / "mst.pth")  # untrained: plumbing only
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks/architecture_reproduction.ipynb"), str(out),
                               parameters={"model": "mst_cifar10", "dataset": "cifar10",
                                           "preset": "quick", "checkpoint": str(tmp_path / "mst.pth"),
                                           "snn_steps": "2,4", "output_dir": str(tmp_path / "eval")},
                               kernel_name="python3", cwd=str(REPO), progress_bar=False)
    text = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells
                   for o in c.get("outputs", []))
    measured = float(re.search(r"measured ([\d.]+) %", text).group(1))
    rows = re.findall(r"^\s*(ANN|SNN)\s+(\d+)\s+([\d.]+)", text, flags=re.M)  # network T top-1
    assert [(net_, int(T)) for net_, T, _ in rows] == [("ANN", 4), ("SNN", 2), ("SNN", 4)]
    assert float(rows[0][2]) == pytest.approx(measured, abs=0.01)
