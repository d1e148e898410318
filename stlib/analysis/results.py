"""Run records -> the benchmark's tables, beside the published numbers, and their figures.

``collect("outputs")`` reads every ``<study>/<run_id>/summary.json`` (plus its ``config.yaml``,
flattened to dotted columns such as ``neuron.v_threshold``) into one DataFrame. ``make_table``
groups the runs of one study by the table's keys (mean over seeds, ``n`` runs) and puts the
published top-1 accuracy and the difference beside ours; ``write_tables`` saves each table as
Markdown under ``outputs/results/``. Nothing here is typed by hand but :data:`PUBLISHED`.

"ours" is ``best_acc1``: the best validation top-1 over the epochs, which is what the timm
training scripts of the papers and of STEP report.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..config import resolve_path

#: Where :data:`PUBLISHED` comes from.
PUBLISHED_SOURCE = ("STEP (Fancyssc/STEP, commit c0b3193) cls/Results.md, T=4, 400 epochs, "
                    "as quoted in reference/STEP.md section 6")

# STEP's row names -> stlib's registered CIFAR models.
_SPIKFORMER, _SDT, _SEMM = "spikformer_4_384", "sdt_2_512", "spikformer_semm_4_384"

# The column order of STEP's component table.
_COMPONENT_VARIANTS = [("native", "native"), ("random_attn", "native"), ("native", "sps_1conv"),
                       ("native", "sps_2conv"), ("sdsa_3", "native"), ("sdsa_3", "vit_embed"),
                       ("sdsa_3", "conv2_embed")]

#: Published top-1 accuracy (%) per table, keyed like the table's rows: see :data:`TABLES`.
PUBLISHED: dict[str, dict[tuple, float]] = {
    # CIFAR-10 / CIFAR-100 (batch 128 unless noted; SGLFormer batch 16; SDT CIFAR-10 95.79
    # after the 2025-07-03 edit)
    "cifar": {
        (_SPIKFORMER, "cifar10"): 95.12, (_SPIKFORMER, "cifar100"): 77.37,
        (_SDT, "cifar10"): 95.79, (_SDT, "cifar100"): 78.29,
        ("qkformer_4_384", "cifar10"): 96.24, ("qkformer_4_384", "cifar100"): 79.72,
        ("spikingformer_4_384", "cifar10"): 95.53, ("spikingformer_4_384", "cifar100"): 79.12,
        (_SEMM, "cifar10"): 94.98, (_SEMM, "cifar100"): 77.59,
        ("swformer_4_384", "cifar10"): 95.31, ("swformer_4_384", "cifar100"): 76.99,
        ("sglformer_4_384", "cifar10"): 95.88, ("sglformer_4_384", "cifar100"): 80.61,
        ("spikingresformer_ti_cifar", "cifar10"): 95.69,
        ("spikingresformer_ti_cifar", "cifar100"): 79.45,
    },
    # neuron test, CIFAR-10 (CLIF / GLIF / KLIF / PLIF only)
    "neuron_test": {
        (_SPIKFORMER, "CLIF", "cifar10"): 95.38, (_SPIKFORMER, "GLIF", "cifar10"): 95.41,
        (_SPIKFORMER, "KLIF", "cifar10"): 95.85, (_SPIKFORMER, "PLIF", "cifar10"): 96.06,
        (_SDT, "CLIF", "cifar10"): 95.49, (_SDT, "GLIF", "cifar10"): 95.45,
        (_SDT, "KLIF", "cifar10"): 95.63, (_SDT, "PLIF", "cifar10"): 95.91,
        (_SEMM, "CLIF", "cifar10"): 95.44, (_SEMM, "GLIF", "cifar10"): 95.78,
        (_SEMM, "KLIF", "cifar10"): 95.59, (_SEMM, "PLIF", "cifar10"): 95.66,
    },
    # encoding test, CIFAR-10 (phase / rate / ttfs; "direct ~ 95" is not a number of the table)
    "encoding_test": {
        (_SPIKFORMER, "phase", "cifar10"): 82.75, (_SPIKFORMER, "rate", "cifar10"): 82.83,
        (_SPIKFORMER, "ttfs", "cifar10"): 82.10,
        (_SDT, "phase", "cifar10"): 85.37, (_SDT, "rate", "cifar10"): 83.77,
        (_SDT, "ttfs", "cifar10"): 84.30,
        (_SEMM, "phase", "cifar10"): 85.81, (_SEMM, "rate", "cifar10"): 83.04,
        (_SEMM, "ttfs", "cifar10"): 83.37,
    },
    # sequential images (sMNIST / psMNIST / sCIFAR10)
    "sequential": {
        (_SPIKFORMER, "smnist"): 98.84, (_SPIKFORMER, "psmnist"): 97.97,
        (_SPIKFORMER, "scifar10"): 84.26,
        (_SDT, "smnist"): 98.77, (_SDT, "psmnist"): 97.80, (_SDT, "scifar10"): 82.31,
        (_SEMM, "smnist"): 99.33, (_SEMM, "psmnist"): 98.46, (_SEMM, "scifar10"): 85.61,
    },
    # component test (meta-transformer ablation), CIFAR-10, seed 42; SDT at batch 64.
    # (model, attention, embedding, dataset); "native" = the model's own attention / embedding
    "meta_transformer": {
        **{(model, attn, embed, "cifar10"): acc for model, accs in {
            _SPIKFORMER: (95.12, 94.96, 78.21, 91.92, 95.57, 89.97, 93.43),
            _SDT: (95.66, 96.48, 82.17, 93.03, 96.48, 87.86, 94.56),
            _SEMM: (94.98, 95.57, 89.24, 93.33, 95.83, 84.95, 93.37)}.items()
           for (attn, embed), acc in zip(_COMPONENT_VARIANTS, accs)},
        ("vit_4_384", "native", "native", "cifar10"): 96.51,
        ("vit_4_384", "random_attn", "native", "cifar10"): 96.41,
        ("vit_4_384", "native", "sps_1conv", "cifar10"): 90.89,
        ("vit_4_384", "native", "sps_2conv", "cifar10"): 95.0,
        ("vit_4_384", "random_attn", "sps_1conv", "cifar10"): 88.46,
    },
    # IF hard / soft reset at thresholds 0.8 / 1.0 / 1.2: no published numbers
    "if_threshold_test": {},
    # surrogate test, CIFAR-10, LIF: Sigmoid alpha 4 / 2, QGate (stlib's triangle, the same
    # derivative) alpha 4 / 2. STEP's surrogate setting never reached its neurons (its own
    # bug list), so every published cell was trained with sigmoid alpha 4.
    "surrogate_test": {
        (model, surrogate, alpha, "cifar10"): acc for model, accs in {
            _SPIKFORMER: (95.12, 95.09, 95.09, 95.09), _SDT: (95.79, 95.81, 95.92, 95.81)}.items()
        for (surrogate, alpha), acc in zip(
            [("sigmoid", 4.0), ("sigmoid", 2.0), ("triangle", 4.0), ("triangle", 2.0)], accs)},
}


@dataclass(frozen=True)
class TableSpec:
    """One benchmark table: the study whose runs fill it and the columns that key its rows."""

    study: str
    keys: tuple[str, ...]
    title: str


TABLES: dict[str, TableSpec] = {
    "cifar": TableSpec("architecture_reproduction", ("model", "dataset"),
                       "CIFAR-10/100 architectures (top-1 %)"),
    "neuron_test": TableSpec("neuron_test", ("model", "neuron", "dataset"),
                             "Neuron test (top-1 %)"),
    "encoding_test": TableSpec("encoding_test", ("model", "encoding", "dataset"),
                               "Encoding test (top-1 %)"),
    "sequential": TableSpec("sequential_classification", ("model", "dataset"),
                            "Sequential images (top-1 %)"),
    # fills once the ablation notebook's runs carry `attention` and `embedding` columns
    # (summary.json fields); until then it lists the published rows only
    "meta_transformer": TableSpec("meta_transformer_ablation",
                                  ("model", "attention", "embedding", "dataset"),
                                  "Meta-transformer component test (top-1 %)"),
    "if_threshold_test": TableSpec("if_threshold_test",
                                   ("model", "neuron", "neuron.v_threshold", "dataset"),
                                   "IF hard / soft reset thresholds (top-1 %)"),
    "surrogate_test": TableSpec("surrogate_test",
                                ("model", "neuron.surrogate", "neuron.alpha", "dataset"),
                                "Surrogate test, LIF (top-1 %; triangle = BrainCog's QGate)"),
}
TABLE_COLUMNS = ["ours", "n", "epochs", "published", "diff"]


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and key != "kwargs":
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value, sort_keys=True) if isinstance(value, Mapping) else value
    return flat


def collect(outputs_dir: str | Path = "outputs"):
    """Every run under ``outputs_dir`` as one row: summary.json fields + dotted config keys.

    Adds ``run_dir``; a run folder without a readable summary is left out. Columns:
    ``study, run_id, model, dataset, neuron, encoding, T, seed, status, best_acc1,
    final_acc1, epochs_done, seconds, ..., neuron.v_threshold, train.epochs, ...``.
    """
    import pandas as pd

    rows = []
    for summary_path in sorted(resolve_path(outputs_dir).glob("*/*/summary.json")):
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            continue
        row: dict[str, Any] = {}
        config_path = summary_path.parent / "config.yaml"
        if config_path.is_file():
            row.update(_flatten(yaml.safe_load(config_path.read_text()) or {}))
        row.update(summary)
        row["run_dir"] = str(summary_path.parent)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["study", "run_id", "model", "dataset", "neuron", "encoding",
                                      "status", "best_acc1", "final_acc1", "run_dir"])
    return frame


def with_model_labels(runs):
    """``runs`` with each row's ``model`` replaced by its ``model_label`` where it has one: a
    shrunken (quick) model keeps its settings in its row name, so it never takes the published
    model's row or bar."""
    if "model_label" not in runs:
        return runs
    return runs.assign(model=runs["model_label"].fillna(runs["model"]))


def make_table(runs, name: str, *, finished_only: bool = True):
    """The table ``name`` (see :data:`TABLES`) from ``collect()``'s frame.

    One row per key combination present in the runs (mean top-1 over seeds, ``n`` runs,
    ``epochs`` done), then every published row with no run yet (``ours`` empty);
    ``diff = ours - published`` in points.
    """
    import pandas as pd

    if name not in TABLES:
        from ..registry import UnknownNameError

        raise UnknownNameError("results table", name, TABLES)
    spec, published = TABLES[name], PUBLISHED[name]
    keys = list(spec.keys)
    mine = runs[runs["study"] == spec.study] if "study" in runs else runs.iloc[0:0]
    if finished_only and "status" in mine:
        mine = mine[mine["status"] == "finished"]
    mine = with_model_labels(mine)
    rows: dict[tuple, dict[str, Any]] = {}
    if not mine.empty and all(k in mine for k in keys):
        grouped = mine.groupby(keys, dropna=False, sort=True)
        for key, group in grouped:
            key = key if isinstance(key, tuple) else (key,)
            rows[key] = {"ours": round(float(group["best_acc1"].mean()), 2), "n": len(group),
                         "epochs": int(group["epochs_done"].max())
                         if "epochs_done" in group else None}
    for key in published:
        rows.setdefault(key, {"ours": math.nan, "n": 0, "epochs": None})
    records = []
    for key, values in rows.items():
        reference = published.get(key, math.nan)
        diff = round(values["ours"] - reference, 2) if not math.isnan(reference) else math.nan
        records.append({**dict(zip(keys, key)), **values, "published": reference, "diff": diff})
    frame = pd.DataFrame(records, columns=keys + TABLE_COLUMNS)
    frame["epochs"] = frame["epochs"].astype("Int64")  # integers with gaps, not 3.0
    return frame.sort_values(keys, key=lambda col: col.astype(str)).reset_index(drop=True)


def tables(runs) -> dict[str, Any]:
    """Every table of :data:`TABLES` (empty studies give the published rows only)."""
    return {name: make_table(runs, name) for name in TABLES}


def to_markdown(frame, title: str | None = None, note: str | None = None) -> str:
    """A pipe table (no tabulate dependency); NaN prints as an empty cell."""
    import pandas as pd

    def cell(column: str, value: Any) -> str:
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float) and column in ("ours", "published", "diff"):
            return f"{value:+.2f}" if column == "diff" else f"{value:.2f}"
        return str(value)

    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(map(str, frame.columns)) + " |")
    lines.append("|" + "---|" * len(frame.columns))
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(c, v) for c, v in zip(frame.columns, row)) + " |")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def write_tables(table_frames: Mapping[str, Any], results_dir: str | Path = "outputs/results"
                 ) -> dict[str, Path]:
    """Write each table as ``<results_dir>/<name>.md`` (created if absent; a relative path
    resolves against the project home, see :func:`stlib.config.project_home`); returns the paths."""
    results_dir = resolve_path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    note = f"Published: {PUBLISHED_SOURCE}. ours = best validation top-1, mean over seeds."
    paths = {}
    for name, frame in table_frames.items():
        path = results_dir / f"{name}.md"
        path.write_text(to_markdown(frame, TABLES[name].title if name in TABLES else name, note))
        paths[name] = path
    return paths


def save_figure(fig, results_dir: str | Path, name: str, dpi: int = 120) -> Path:
    """Save ``fig`` as ``<results_dir>/<name>`` (the folder is created; a relative path resolves
    against the project home, as the tables do); returns the path."""
    path = resolve_path(results_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def accuracy_plot(runs, x: str = "neuron", hue: str = "model", study: str | None = None,
                  title: str | None = None):
    """Bar chart of best top-1 by ``x`` and ``hue`` (e.g. neuron x model) over finished runs.

    One panel per dataset (digits and CIFAR runs are never averaged together). A bar is the
    mean over seeds, its error bar the standard deviation over seeds (where there are several),
    and its value is written on it. The y-axis is zoomed to the bars rather than starting at
    0, so that a difference of half a point stays visible.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = runs[runs["status"] == "finished"] if "status" in runs else runs
    if study is not None and "study" in frame:
        frame = frame[frame["study"] == study]
    if hue == "model":
        frame = with_model_labels(frame)
    datasets = sorted(frame["dataset"].dropna().unique()) if "dataset" in frame else []
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(max(8, 4.5 * len(datasets)), 3.4),
                             squeeze=False)
    for ax, dataset in zip(axes[0], datasets or [None]):
        part = frame if dataset is None else frame[frame["dataset"] == dataset]
        if not part.empty:
            sns.barplot(data=part, x=x, y="best_acc1", hue=hue, ax=ax, errorbar="sd",
                        capsize=0.15, err_kws={"linewidth": 1})
            for bars in ax.containers:
                ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
            ax.set_ylim(*_zoomed_range(part.groupby([x, hue])["best_acc1"]))
            ax.get_legend().remove()
        ax.set_title(dataset or "no finished runs", fontsize=10)
        ax.set_ylabel("best top-1 (%), mean ± sd over seeds")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1),
                           fontsize="small")
    fig.suptitle(title or f"accuracy by {x} x {hue}")
    fig.tight_layout()
    return fig


def _zoomed_range(groups) -> tuple[float, float]:
    """y-limits around the bars' mean ± sd, with room for the value labels above them."""
    stats = groups.agg(["mean", "std"]).fillna(0.0)
    low, high = (stats["mean"] - stats["std"]).min(), (stats["mean"] + stats["std"]).max()
    pad = max(0.5, 0.25 * (high - low))
    return max(0.0, low - pad), high + 1.5 * pad


def learning_curves_frame(runs, study: str | None = None):
    """All ``metrics.csv`` rows of the (finished or not) runs, with a ``run`` label column."""
    import pandas as pd

    frame = runs if study is None or "study" not in runs else runs[runs["study"] == study]
    parts = []
    for row in frame.itertuples(index=False):
        path = Path(row.run_dir) / "metrics.csv"
        if path.is_file():
            metrics = pd.read_csv(path)
            label = " ".join(str(getattr(row, k))
                             for k in ("model", "neuron", "encoding", "dataset") if hasattr(row, k))
            parts.append(metrics.assign(run=label, study=row.study))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["epoch", "val_acc1", "run", "study"])


def learning_curves_plot(runs, study: str | None = None, title: str | None = None):
    """Validation top-1 per epoch, one line per run."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    curves = learning_curves_frame(runs, study)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    if not curves.empty:
        sns.lineplot(data=curves, x="epoch", y="val_acc1", hue="run", marker="o", ax=ax)
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(title or f"learning curves{f' ({study})' if study else ''}")
    fig.tight_layout()
    return fig


__all__ = ["PUBLISHED", "PUBLISHED_SOURCE", "TABLES", "TableSpec", "accuracy_plot", "collect",
           "learning_curves_frame", "learning_curves_plot", "make_table", "tables",
           "with_model_labels",
           "to_markdown", "write_tables"]
