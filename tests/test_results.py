"""Results: run folders -> DataFrame -> tables beside the published numbers -> Markdown."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from stlib.analysis import results


def fake_run(root: Path, study: str, model: str, neuron: str = "LIF", dataset: str = "cifar10",
             seed: int = 0, best: float = 90.0, status: str = "finished", encoding: str = "direct",
             v_threshold: float | None = None, surrogate: str | None = None,
             alpha: float | None = None) -> Path:
    """A run folder as fit() leaves it (summary.json, config.yaml, metrics.csv)."""
    run_dir = (root / study
               / f"{model}-{neuron}-{dataset}-s{seed}-{encoding}-{v_threshold}-{surrogate}{alpha}")
    run_dir.mkdir(parents=True)
    summary = dict(run_id=run_dir.name, study=study, model=model, dataset=dataset, neuron=neuron,
                   encoding=encoding, T=4, seed=seed, status=status, best_acc1=best,
                   final_acc1=best - 0.5, epochs_done=3)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    config = {"experiment": {"study": study, "seed": seed}, "model": {"name": model, "kwargs": {}},
              "neuron": {"type": neuron, "v_threshold": v_threshold, "surrogate": surrogate,
                         "alpha": alpha}, "train": {"epochs": 3}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.csv").write_text(
        "epoch,lr,train_loss,train_acc1,val_loss,val_acc1,val_acc5,seconds\n"
        + "".join(f"{e},0.001,{2 - e / 2},{50 + e},{2 - e / 3},{best - 3 + e},99,1.0\n"
                  for e in range(3)))
    return run_dir


@pytest.fixture
def outputs(tmp_path):
    root = tmp_path / "outputs"
    fake_run(root, "neuron_test", "spikformer_4_384", "PLIF", seed=0, best=95.0)
    fake_run(root, "neuron_test", "spikformer_4_384", "PLIF", seed=1, best=96.0)
    fake_run(root, "neuron_test", "spikformer_4_384", "KLIF", best=50.0, status="running")
    fake_run(root, "neuron_test", "spikformer_4_384", "LIF", dataset="digits", best=93.0)
    fake_run(root, "encoding_test", "sdt_2_512", encoding="rate", best=80.0)
    fake_run(root, "if_threshold_test", "spikformer_4_384", "IFSoft", v_threshold=0.8, best=91.0)
    fake_run(root, "if_threshold_test", "spikformer_4_384", "IFSoft", v_threshold=1.2, best=92.0)
    (root / "neuron_test" / "notebooks").mkdir()  # sweep side files are not runs
    return root


def test_collect_reads_summaries_and_flattened_config(outputs):
    runs = results.collect(outputs)
    assert len(runs) == 7
    expected = {"study", "model", "best_acc1", "run_dir", "neuron.v_threshold", "train.epochs"}
    assert expected <= set(runs)
    assert sorted(runs["neuron.v_threshold"].dropna()) == [0.8, 1.2]
    empty = results.collect(outputs / "nothing")
    assert empty.empty
    cifar = results.make_table(empty, "cifar")  # no runs yet: the published rows, ours empty
    assert len(cifar) == len(results.PUBLISHED["cifar"]) and (cifar.n == 0).all()


def test_neuron_table_means_seeds_and_compares_with_published(outputs):
    table = results.make_table(results.collect(outputs), "neuron_test")
    plif = table[(table.model == "spikformer_4_384") & (table.neuron == "PLIF")].iloc[0]
    assert plif.ours == 95.5 and plif.n == 2 and plif.published == 96.06
    assert plif["diff"] == pytest.approx(-0.56)
    klif = table[(table.model == "spikformer_4_384") & (table.neuron == "KLIF")].iloc[0]
    assert math.isnan(klif.ours) and klif.n == 0, "an unfinished run is not a result"
    digits = table[table.dataset == "digits"].iloc[0]
    assert digits.ours == 93.0 and math.isnan(digits.published)
    # every published row is present, with or without a run
    assert len(table) == len(results.PUBLISHED["neuron_test"]) + 1


def test_every_table_builds_and_the_threshold_table_keys_on_v_threshold(outputs):
    tables = results.tables(results.collect(outputs))
    assert set(tables) == set(results.TABLES)
    thresholds = tables["if_threshold_test"]
    assert list(thresholds["neuron.v_threshold"]) == [0.8, 1.2]
    assert list(thresholds["ours"]) == [91.0, 92.0]
    enc = tables["encoding_test"]
    rate = enc[(enc.model == "sdt_2_512") & (enc.encoding == "rate")].iloc[0]
    assert rate["diff"] == pytest.approx(80.0 - 83.77)
    with pytest.raises(ValueError, match="unknown results table 'neurons'.*neuron_test"):
        results.make_table(results.collect(outputs), "neurons")


def test_markdown_tables_are_written(outputs, tmp_path):
    tables = results.tables(results.collect(outputs))
    paths = results.write_tables(tables, tmp_path / "results")
    text = paths["neuron_test"].read_text()
    assert text.startswith("### Neuron test")
    assert "| model | neuron | dataset | ours | n | epochs | published | diff |" in text
    assert "| spikformer_4_384 | PLIF | cifar10 | 95.50 | 2 | 3 | 96.06 | -0.56 |" in text
    assert "STEP" in text


def test_figures_draw_bars_and_curves(outputs):
    import matplotlib

    matplotlib.use("Agg")
    runs = results.collect(outputs)
    fig = results.accuracy_plot(runs, x="neuron", hue="model", study="neuron_test")
    cifar, digits = fig.axes[:2]  # one panel per dataset: never averaged together
    assert (cifar.get_title(), digits.get_title()) == ("cifar10", "digits")
    bars = [[p for p in ax.patches if p.get_height() > 0] for ax in (cifar, digits)]
    assert [len(b) for b in bars] == [1, 1]  # PLIF on cifar10, LIF on digits; KLIF is running
    # PLIF: mean of seeds 95 and 96, its value on the bar, an error bar over the seeds
    assert [t.get_text() for t in cifar.texts] == ["95.50"]
    assert cifar.lines, "no error bar"
    low, high = cifar.get_ylim()
    assert 90.0 < low < 95.0 and high > 96.0  # zoomed: a 1-point gap stays visible
    fig = results.learning_curves_plot(runs, study="neuron_test")
    assert len(fig.axes[0].lines) >= 3
    assert len(results.learning_curves_frame(runs, "neuron_test")) == 4 * 3


def test_surrogate_table_keys_on_surrogate_and_alpha(tmp_path):
    root = tmp_path / "outputs"
    fake_run(root, "surrogate_test", "sdt_2_512", surrogate="triangle", alpha=4.0, best=95.5)
    fake_run(root, "surrogate_test", "sdt_2_512", surrogate="triangle", alpha=2.0, best=94.0)
    table = results.make_table(results.collect(root), "surrogate_test")
    assert len(table) == 8  # STEP's 2 models x 4 surrogates, two of them with a run
    cell = table[(table["neuron.surrogate"] == "triangle") & (table["neuron.alpha"] == 4.0)
                 & (table.model == "sdt_2_512")].iloc[0]
    assert cell.ours == 95.5 and cell.published == 95.92  # STEP's "QGate alpha 4"
    assert cell["diff"] == pytest.approx(-0.42)
    assert table.n.sum() == 2


def test_a_quick_run_never_fills_the_published_models_row(tmp_path):
    root = tmp_path / "outputs"
    run = fake_run(root, "architecture_reproduction", "spikformer_4_384", best=97.0)
    summary = json.loads((run / "summary.json").read_text())
    summary["model_label"] = "spikformer_4_384 [depth=1, embed_dim=64, num_heads=4]"
    (run / "summary.json").write_text(json.dumps(summary))
    table = results.make_table(results.collect(root), "cifar")
    published = table[table.model == "spikformer_4_384"]
    assert published.n.sum() == 0 and published.published.tolist() == [95.12, 77.37]
    [quick] = table[table.model.str.contains("depth=1")].itertuples()
    assert quick.ours == 97.0 and math.isnan(quick.published)

