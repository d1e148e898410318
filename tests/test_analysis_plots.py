"""stlib.analysis.plots: each figure draws the data it is given (checked on the artists)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from stlib.analysis.gradcam import CamResult  # noqa: E402
from stlib.analysis.plots import (firing_heatmap, gradcam_grid, learning_curves,  # noqa: E402
                                  spike_raster)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_learning_curves_has_accuracy_and_loss_panels():
    rows = [dict(epoch=e, train_acc1=10.0 * e, train_loss=2.0 - e / 2, val_acc1=9.0 * e,
                 val_loss=2.1 - e / 2) for e in range(3)]
    fig = learning_curves(rows, title="run")
    acc, loss = fig.axes[:2]
    assert acc.get_ylabel() == "top-1 accuracy (%)"
    assert sorted(acc.lines[0].get_ydata().tolist() + acc.lines[1].get_ydata().tolist()) == \
        sorted([0.0, 10.0, 20.0, 0.0, 9.0, 18.0])


def test_firing_heatmap_shows_layers_by_steps_and_their_mean():
    table = pd.DataFrame({"layer": ["net.a", "net.b", "c"], "t0": [0.0, 0.1, 0.3],
                          "t1": [0.2, 0.3, 0.5], "rate": [0.1, 0.2, 0.4]})
    fig = firing_heatmap(table, title="rates")
    mesh = fig.axes[0].collections[0]
    values = np.asarray(mesh.get_array()).reshape(3, 3)
    assert values == pytest.approx(np.array([[0.0, 0.2, 0.1], [0.1, 0.3, 0.2], [0.3, 0.5, 0.4]]))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["a", "b", "c"]  # the encoder wrapper's "net." prefix is dropped
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["t0", "t1", "mean"]
    assert mesh.norm.vmin == 0.0


def test_spike_raster_marks_every_spike_of_the_chosen_neurons():
    torch.manual_seed(0)
    spikes = {"net.l1": (torch.rand(4, 2, 10, 8) > 0.7).float(),
              "net.l2": (torch.rand(4, 2, 30) > 0.9).float()}
    fig = spike_raster(spikes, sample=1, neurons=20)
    assert len(fig.axes) == 2
    for ax, s in zip(fig.axes, spikes.values()):
        expected = int(s[:, 1].flatten(1)[:, :20].sum())
        assert len(ax.collections[0].get_offsets()) == expected > 0
    with pytest.raises(ValueError, match="no spike"):
        spike_raster({})


def test_gradcam_grid_has_input_steps_and_mean_columns():
    T, B, H = 3, 4, 8
    maps = np.random.default_rng(0).random((T, B, H, H)).astype(np.float32)
    result = CamResult(per_step=maps, mean=maps.mean(0), targets=[1, 2, 3, 4],
                       logits=np.zeros((B, 5)), method="gradcam")
    images = torch.rand(B, 1, H, H)
    fig = gradcam_grid(images, result, labels=[1, None, 3, 4], max_images=3)
    assert len(fig.axes) == 3 * (T + 2)
    titles = [ax.get_title() for ax in fig.axes[:T + 2]]
    assert titles == ["input", "t = 0", "t = 1", "t = 2", "mean over T"]
    drawn = fig.axes[1].images[0].get_array()
    assert drawn.shape == (H, H, 3) and np.asarray(drawn).std() > 0
    assert fig.axes[T + 2].get_ylabel() == "explains 2"  # no label for image 1
