"""``python -m stlib.bench [neurons|train]`` at a tiny size: the tables' structure, never the timings."""
from __future__ import annotations

import io

import pytest
import torch

from stlib import bench


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert set(lines[1].replace("|", "")) == {"-"}  # the Markdown rule under the header
    return split[0], split[2:]


def test_neuron_table_has_a_row_per_neuron_dtype_and_implementation():
    out = io.StringIO()
    impls = [i for i in bench.IMPLS if i != "stlib-compiled"]  # compiled: its own test below
    rows = bench.bench_neurons(T=2, size=(3, 5), dtypes=("float32", "bfloat16"), neurons=("LIF", "PLIF", "GLIF"),
                               impls=impls, device="cpu", reps=1, warmup=0, out=out)
    text = out.getvalue()
    assert text.startswith("# stlib.bench neurons | device: CPU")
    header, cells = _table(text)
    assert header == ["neuron", "dtype", "impl", "runs", "ms fwd+bwd", "GB/s", "% peak"]
    assert len(cells) == len(rows) == 2 * 3 * len(impls)
    assert all(len(r) == len(header) for r in cells)
    ours = [r for r in rows if r["impl"].startswith("stlib")]
    assert all(r["ms"] > 0 and r["gbps"] > 0 for r in ours), ours  # our two paths always run
    assert all(r["peak_pct"] is None for r in rows)  # no peak on a CPU
    runs = {(r["neuron"], r["impl"]): r["runs"] for r in rows}
    assert runs[("LIF", "stlib")] == "torch-fused" and runs[("LIF", "stlib-reference")] == "torch loop"
    assert runs[("GLIF", "stlib")] == "torch loop"


def test_peak_bandwidth_table():
    assert bench.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert bench.peak_bandwidth("NVIDIA H100 PCIe") == 2.0e12
    assert bench.peak_bandwidth("NVIDIA H200") == 4.8e12
    assert bench.peak_bandwidth("Some Future GPU") is None


def test_compiled_neuron_row_reports_its_compile():
    out = io.StringIO()
    rows = bench.bench_neurons(T=2, size=(3, 5), dtypes=("float32",), neurons=("IF",), impls=("stlib-compiled",),
                               device="cpu", reps=1, warmup=1, out=out)
    assert rows[0]["ms"] > 0 and rows[0]["runs"].startswith("inductor (compiled in ")


def test_train_table_compares_the_models(capsys):
    bench.main(["train", "--batch", "1", "--steps", "1", "--warmup", "0", "--T", "1", "--device", "cpu",
                "--contenders", "stlib", "spikingjelly", "--precision", "bf16"])
    text = capsys.readouterr().out
    assert "# stlib.bench train | device: CPU" in text and "precision: bf16 autocast" in text
    assert f"torch {torch.__version__}" in text
    header, cells = _table(text)
    assert header == ["model", "params (M)", "images/s", "ms/step", "vs spikingjelly", "first step (s)",
                      "peak memory (GiB)"]
    labels = [r[0] for r in cells]
    assert labels[0] == "stlib"
    if "spikingjelly" not in labels:  # its model module may be unimportable: then it says why
        assert "spikingjelly: cannot build the model" in text
    for row in cells:
        assert float(row[2]) > 0 and 9.0 < float(row[1]) < 9.6  # Spikformer-4-384: about 9.3 M


def test_unknown_precision_is_named():
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid: fp32, bf16"):
        bench.bench_train(batch=1, steps=1, T=1, device="cpu", contenders=("stlib",), precision="fp8")


def test_size_option_is_checked():
    with pytest.raises(SystemExit):
        bench.main(["neurons", "--size", "12xa"])
