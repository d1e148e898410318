"""notebooks/visualization.ipynb under papermill: a quick digits run and the CIFAR sample PNGs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import stlib
from stlib.models import create_model

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "visualization.ipynb"
CIFAR_SAMPLES = REPO.parent / "shared" / "data" / "cifar_samples"
CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def execute(tmp_path, monkeypatch, **parameters):
    papermill = pytest.importorskip("papermill")
    # one OpenMP thread: the kernel shares 2 cores with other processes
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from stlib.notebooks import run_notebook  # refuses parameter names the notebook lacks

    assert set(parameters) <= set(papermill.inspect_notebook(str(NOTEBOOK)))
    run_notebook(NOTEBOOK, tmp_path / "executed.ipynb", cwd=REPO, **parameters)
    return json.loads((Path(parameters["output_dir"]) / "analysis.json").read_text())


def png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def check_figures(figures: Path, headline: dict, T: int, layers: int) -> None:
    assert {"gradcam_gradcam.png", "firing_rates.png", "spike_raster.png"} <= set(
        headline["figures"]) or {"gradcam_gradcampp.png", "firing_rates.png"} <= set(
        headline["figures"])
    for name in headline["figures"]:
        image = png(figures / name)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 10, name
    assert len(headline["cam_std_per_step"]) == T
    assert headline["cam_std_mean"] > 0.05, "the mean Grad-CAM map is constant"
    rates = pd.read_csv(figures / "firing_per_step.csv")
    assert len(rates) == layers and list(rates.columns[1:]) == [f"t{t}" for t in range(T)] + ["rate"]
    values = rates.drop(columns="layer").to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    assert rates["rate"].nunique() > 1, "rates identical across layers"
    assert headline["energy_mj"] > 0


@pytest.mark.slow
def test_notebook_on_a_quick_digits_run(quick_run_dir, tmp_path, monkeypatch):
    figures = tmp_path / "figures"
    headline = execute(tmp_path, monkeypatch, run_dir=str(quick_run_dir), images="val",
                       method="gradcam", max_images=4, output_dir=str(figures))
    assert headline["model"] == "spikformer_4_384" and headline["T"] == 2
    check_figures(figures, headline, T=2, layers=12)
    assert "learning_curves.png" in headline["figures"]
    grid = png(figures / "gradcam_gradcam.png")
    assert grid.shape[0] > grid.shape[1]  # 4 image rows x (input, t0, t1, mean) columns
    assert len(list((figures / "overlays").glob("*.png"))) == 4


@pytest.mark.slow
def test_notebook_on_cifar_sample_pngs(tmp_path, monkeypatch):
    if not CIFAR_SAMPLES.is_dir():
        pytest.skip(f"{CIFAR_SAMPLES} is absent")
    from stlib.analysis.firing import calibrate_batchnorm
    from stlib.analysis.gradcam import load_images, load_model

    # a tiny 3-channel Spikformer, trained a few steps on the 20 CIFAR-10 samples, with its
    # BatchNorm statistics then estimated on them (untrained statistics leave it silent)
    overrides = ["depth=1", "embed_dim=32", "num_heads=2"]
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="weights are random"):  # trained just below
        model = load_model("spikformer_4_384", overrides=overrides, T=2, mean=CIFAR10_MEAN,
                           std=CIFAR10_STD)
    images, labels, _ = load_images(CIFAR_SAMPLES, max_images=40, in_chans=3)
    keep = [i for i, y in enumerate(labels) if y is not None and y < 10][-20:]
    x, y = images[keep], torch.tensor([labels[i] for i in keep])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    calibrate_batchnorm(model, [x])
    torch.save(model.net.state_dict(), tmp_path / "tiny.pt")

    figures = tmp_path / "cifar_figures"
    headline = execute(tmp_path, monkeypatch, model="spikformer_4_384",
                       checkpoint=str(tmp_path / "tiny.pt"), model_overrides=overrides, T=2,
                       mean=CIFAR10_MEAN, std=CIFAR10_STD, images=str(CIFAR_SAMPLES),
                       max_images=6, method="gradcam++", output_dir=str(figures))
    assert headline["method"] == "gradcam++" and headline["images"] == 6
    check_figures(figures, headline, T=2, layers=12)
    # a 10-class model is shown the CIFAR-10 samples (the CIFAR-100 files sort first)
    assert len(list((figures / "overlays").glob("cifar10_0*_gradcampp.png"))) == 6
