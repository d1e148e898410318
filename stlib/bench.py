"""Measured speed, side by side with the peers: ``python -m stlib.bench [neurons|train]``.

* no subcommand: the CPU report of README "Performance": every neuron eager vs compiled (and
  spikingjelly), at T=4 and 8x384x256 neurons per step (fwd+bwd, fp32 and bf16), then Spikformer-4-384
  training steps (batch 8, T=4, CIFAR size) of stlib eager, stlib compiled and spikingjelly
  2.0, in fp32 and under bf16 autocast (the same precision for all three);

* ``neurons``: per neuron type and dtype, the time of one forward + backward over
  ``x [T, *size]`` and the achieved bandwidth, for stlib's default backend (``auto``: the fused
  Triton kernels on CUDA, the fused torch function on CPU), stlib's reference loop, and the
  equivalent spikingjelly 2.0 node (``step_mode='m'``; its own automatic implementation choice,
  reported in the ``runs`` column; ``--sj-impl triton`` forces its Triton kernels). The issue's
  size is T=4, size 128x384x64 (Spikformer-4-384 on CIFAR: batch 128, 384 channels, 8x8 tokens).
* ``train``: images/s and peak memory of Spikformer-4-384 (CIFAR, T=4) training steps (AdamW,
  cross-entropy, bf16 autocast on CUDA), stlib's model eager and under ``torch.compile``
  against spikingjelly 2.0's ``spikformer_cifar10``, interleaved step by step so that all see
  the same machine load. The compiled model's compile is in its warm-up steps; the
  ``first step`` column shows it.

Bandwidth is *effective*: every implementation is credited with the bytes the fused design
must move (NEURONS.md section 4: forward reads X and writes S and H (fp32); backward reads gS
and H and writes gX), i.e. ``T*N*(4*itemsize + 8)`` bytes, divided by the measured time. The
percentage of the device's peak is printed on known GPUs only (:data:`PEAK_BANDWIDTH`).
Timings are printed, never asserted.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch
from torch import nn

__all__ = ["PEAK_BANDWIDTH", "peak_bandwidth", "device_name", "versions", "bench_neurons", "bench_train",
           "report", "main"]

# bytes/s of HBM/GDDR by device-name fragment; the first fragment found in the name wins
PEAK_BANDWIDTH: list[tuple[str, float]] = [
    ("H200", 4.8e12),
    ("H100 PCIe", 2.0e12),
    ("H100 NVL", 3.9e12),
    ("H100", 3.35e12),          # "NVIDIA H100 80GB HBM3": the SXM part
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),         # the 40 GB parts
    ("L40S", 0.864e12),
    ("RTX 4090", 1.008e12),
]

NEURON_TYPES = ["LIF", "IF", "IFSoft", "PLIF", "CLIF", "GLIF", "KLIF"]
SJ_FUSED_OPS = ["LIF", "IF", "PLIF", "CLIF"]  # spikingjelly 2.0 runs GLIF and KLIF in plain torch
IMPLS = ["stlib", "stlib-compiled", "stlib-reference", "spikingjelly"]
TRAINERS = ["stlib", "stlib-compiled", "spikingjelly"]


def peak_bandwidth(name: str) -> float | None:
    """The device's peak memory bandwidth in bytes/s, or None for an unknown device."""
    for fragment, bw in PEAK_BANDWIDTH:
        if fragment.lower() in name.lower():
            return bw
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {name} ({torch.get_num_threads()} threads)"


def versions() -> str:
    """``torch X | spikingjelly Y`` (or that spikingjelly is absent)."""
    try:
        from importlib.metadata import version

        sj = f"spikingjelly {version('spikingjelly')}"
    except Exception:  # not installed: the spikingjelly rows say why they failed
        sj = "spikingjelly not installed"
    return f"torch {torch.__version__} | {sj}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], None], device: torch.device, reps: int, warmup: int) -> float:
    """Median seconds of ``fn`` over ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------- neurons
def _ours(name: str, T: int, backend: str) -> nn.Module:
    from stlib.neurons import create_neuron

    settings = {"CLIF": {}, "GLIF": {"surrogate": "sigmoid"}}.get(name, {"detach_reset": True})
    return create_neuron(name, T=T, backend=backend, **settings)


def _spikingjelly(name: str, T: int) -> nn.Module:
    """spikingjelly 2.0's node with the same settings as :func:`_ours`."""
    from spikingjelly.activation_based import neuron

    m = "m"
    return {
        "LIF": lambda: neuron.LIFNode(tau=2.0, detach_reset=True, step_mode=m),
        "IF": lambda: neuron.IFNode(v_reset=0.0, detach_reset=True, step_mode=m),
        "IFSoft": lambda: neuron.IFNode(v_reset=None, detach_reset=True, step_mode=m),
        "PLIF": lambda: neuron.ParametricLIFNode(init_tau=2.0, detach_reset=True, step_mode=m),
        "CLIF": lambda: neuron.ComplementaryLIFNode(tau=2.0, step_mode=m),
        "GLIF": lambda: neuron.GatedLIFNode(T=T, step_mode=m),
        "KLIF": lambda: neuron.KLIFNode(detach_reset=True, step_mode=m),
    }[name]()


def _sj_impl(name: str, device: torch.device) -> str:
    """What spikingjelly says it runs for this neuron (its ``neuron_implementation``)."""
    key = {"LIF": "lif", "IF": "if", "IFSoft": "if", "PLIF": "plif", "CLIF": "clif"}.get(name)
    if key is None:
        return "torch (not fused in sj)"
    try:
        from spikingjelly.activation_based import functional

        return str(functional.neuron_implementation(key, device)["implementation"])
    except Exception as err:  # the query is an sj detail; the timing stands without it
        return f"? ({type(err).__name__})"


def _compiled_neuron(name: str, T: int, x0: torch.Tensor) -> nn.Module:
    """``torch.compile`` of stlib's neuron (one graph: ``fullgraph``), compiled here for the
    shape of ``x0`` with a gradient; ``compile_seconds`` is that first call."""
    torch._dynamo.reset()  # every neuron class shares BaseNeuron.forward: a fresh recompile budget
    neuron = _ours(name, T, "auto").to(x0.device)
    compiled = torch.compile(neuron, fullgraph=True)
    start = time.perf_counter()
    compiled(x0.detach().requires_grad_()).sum().backward()
    _sync(x0.device)
    compiled.compile_seconds = time.perf_counter() - start
    return compiled


def _our_impl(neuron: nn.Module, x: torch.Tensor) -> str:
    from stlib.neurons import kernels

    fused = kernels.select(neuron, x)
    return {kernels.run_triton: "triton", kernels.run_torch: "torch-fused", None: "torch loop"}[fused]


def bench_neurons(*, T: int = 4, size: tuple[int, ...] = (128, 384, 64), dtypes=("float32", "bfloat16"),
                  neurons=NEURON_TYPES, impls=IMPLS, device: str | None = None, reps: int = 10,
                  warmup: int = 2, out=None) -> list[dict]:
    """Time forward + backward of every (neuron, dtype, implementation); print and return the rows."""
    out = out or sys.stdout
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = device_name(dev)
    peak = peak_bandwidth(name) if dev.type == "cuda" else None
    numel = T * int(torch.tensor(size).prod())
    print(f"# stlib.bench neurons | device: {name} | T={T} size={'x'.join(map(str, size))} "
          f"({numel / 1e6:.2f} M element-steps) | {versions()}", file=out)
    print("# GB/s: effective, T*N*(4*itemsize + 8) bytes (the fused design's traffic) / time; "
          "% peak only on known GPUs", file=out)
    header = ["neuron", "dtype", "impl", "runs", "ms fwd+bwd", "GB/s", "% peak"]
    print("| " + " | ".join(header) + " |", file=out)
    print("|" + "|".join("---" for _ in header) + "|", file=out)
    rows = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        gen = torch.Generator().manual_seed(0)
        x0 = (torch.randn((T, *size), generator=gen) + 0.5).to(device=dev, dtype=dtype)
        nbytes = numel * (4 * x0.element_size() + 8)
        for neuron_name in neurons:
            for impl in impls:
                row = {"neuron": neuron_name, "dtype": dtype_name, "impl": impl}
                try:
                    if impl == "spikingjelly":
                        from spikingjelly.activation_based import functional

                        module = _spikingjelly(neuron_name, T).to(dev)
                        runs, reset = _sj_impl(neuron_name, dev), functional.reset_net
                    elif impl == "stlib-compiled":
                        module = _compiled_neuron(neuron_name, T, x0)
                        runs, reset = f"inductor (compiled in {module.compile_seconds:.1f} s)", (lambda m: None)
                    else:
                        module = _ours(neuron_name, T, "auto" if impl == "stlib" else "reference").to(dev)
                        runs, reset = _our_impl(module, x0), (lambda m: None)

                    def step(module=module, reset=reset):
                        x = x0.detach().requires_grad_()
                        module(x).sum().backward()  # as spikingjelly's own benchmark times it
                        reset(module)

                    seconds = _time(step, dev, reps, warmup)
                    row.update(runs=runs, ms=seconds * 1e3, gbps=nbytes / seconds / 1e9,
                               peak_pct=None if peak is None else 100 * nbytes / seconds / peak)
                except Exception as err:  # print the failure in the table, keep benchmarking
                    row.update(runs=f"failed: {type(err).__name__}: {str(err)[:60]}", ms=None, gbps=None,
                               peak_pct=None)
                rows.append(row)
                cells = [row["neuron"], row["dtype"], row["impl"], row["runs"],
                         "-" if row["ms"] is None else f"{row['ms']:.3f}",
                         "-" if row["gbps"] is None else f"{row['gbps']:.1f}",
                         "-" if row["peak_pct"] is None else f"{row['peak_pct']:.0f}%"]
                print("| " + " | ".join(cells) + " |", file=out, flush=True)
    return rows


# ------------------------------------------------------------------------------- train
def _ours_model(T: int) -> nn.Module:
    from stlib.models import create_model

    return create_model("spikformer_4_384", T=T, num_classes=10, img_size=32)


def _sj_model(T: int) -> nn.Module:
    from spikingjelly.activation_based import model

    return model.spikformer_cifar10(T=T, num_classes=10)


PRECISIONS = ["fp32", "bf16"]


def bench_train(*, batch: int = 128, steps: int = 10, warmup: int = 2, T: int = 4, device: str | None = None,
                contenders=TRAINERS, precision: str | None = None, out=None) -> list[dict]:
    """Images/s and peak memory of Spikformer-4-384 CIFAR training: stlib eager, stlib compiled
    and spikingjelly, interleaved step by step. ``precision``: ``"fp32"`` or ``"bf16"``
    (autocast for all contenders); default bf16 on CUDA, fp32 on CPU."""
    out = out or sys.stdout
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = precision or ("bf16" if dev.type == "cuda" else "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    autocast = precision == "bf16"
    warmup = max(warmup, 1) if "stlib-compiled" in contenders else warmup  # the compile
    print(f"# stlib.bench train | device: {device_name(dev)} | Spikformer-4-384 CIFAR-10 32x32, T={T}, "
          f"batch {batch}, {steps} timed steps after {warmup} warm-up | precision: "
          f"{'bf16 autocast' if autocast else 'fp32'} | AdamW | {versions()}", file=out)
    from stlib.build import compile_model

    built: dict[str, dict] = {}
    for label in contenders:
        try:
            model = (_sj_model if label == "spikingjelly" else _ours_model)(T).to(dev).train()
            forward = compile_model(model, True) if label == "stlib-compiled" else model  # as train.compile
            built[label] = {"model": model, "forward": forward, "times": [], "peak": 0, "first": None,
                            "opt": torch.optim.AdamW(model.parameters(), lr=1e-4)}
        except Exception as err:  # e.g. spikingjelly.activation_based.model needs h5py
            print(f"# {label}: cannot build the model: {type(err).__name__}: {err}", file=out)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, generator=gen).to(dev)
    labels = torch.randint(0, 10, (batch,), generator=gen).to(dev)

    def train_step(c: dict, label: str) -> None:
        c["opt"].zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            logits = c["forward"](images)
            if label == "spikingjelly":  # its head returns [T, B, classes]
                logits = logits.mean(0)
            loss = nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        c["opt"].step()
        if label == "spikingjelly":
            from spikingjelly.activation_based import functional

            functional.reset_net(c["model"])

    for step in range(warmup + steps):
        for label, c in built.items():  # interleaved: same load for all
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            _sync(dev)
            start = time.perf_counter()
            train_step(c, label)
            _sync(dev)
            seconds = time.perf_counter() - start
            if c["first"] is None:
                c["first"] = seconds
            if step >= warmup:
                c["times"].append(seconds)
                if dev.type == "cuda":
                    c["peak"] = max(c["peak"], torch.cuda.max_memory_allocated(dev))
    header = ["model", "params (M)", "images/s", "ms/step", "vs spikingjelly", "first step (s)",
              "peak memory (GiB)"]
    print("| " + " | ".join(header) + " |", file=out)
    print("|" + "|".join("---" for _ in header) + "|", file=out)
    medians = {label: statistics.median(c["times"]) if c["times"] else float("nan") for label, c in built.items()}
    rows = []
    for label, c in built.items():
        seconds = medians[label]
        params = sum(p.numel() for p in c["model"].parameters()) / 1e6
        peak = c["peak"] / 2**30 if dev.type == "cuda" else None
        ratio = medians["spikingjelly"] / seconds if "spikingjelly" in medians else None
        row = {"model": label, "params_m": params, "images_per_s": batch / seconds, "ms": seconds * 1e3,
               "vs_sj": ratio, "first_s": c["first"], "peak_gib": peak, "precision": precision}
        rows.append(row)
        cells = [label, f"{params:.2f}", f"{row['images_per_s']:.1f}", f"{row['ms']:.1f}",
                 "-" if ratio is None else f"{ratio:.2f}x", f"{c['first']:.1f}",
                 "- (CPU: not tracked)" if peak is None else f"{peak:.2f}"]
        print("| " + " | ".join(cells) + " |", file=out, flush=True)
    return rows


def report(*, out=None, steps: int = 6, device: str | None = None) -> dict[str, list[dict]]:
    """The issue-17 report: neurons eager vs compiled (and spikingjelly), then the training step
    of stlib eager / compiled vs spikingjelly in fp32 and bf16 autocast."""
    out = out or sys.stdout
    neurons = bench_neurons(T=4, size=(8, 384, 256), dtypes=("float32", "bfloat16"), reps=20,
                            impls=("stlib", "stlib-compiled", "spikingjelly"), device=device, out=out)
    print(file=out)
    train = []
    for precision in PRECISIONS:
        train += bench_train(batch=8, steps=steps, warmup=2, T=4, device=device, precision=precision, out=out)
        print(file=out)
    return {"neurons": neurons, "train": train}


# -------------------------------------------------------------------------------- CLI
def _size(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"--size wants positive ints joined by 'x' (128x384x64), got {text!r}")
    return dims


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stlib.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what")  # none: the report (neurons, then training)
    p = sub.add_parser("neurons", help="fused neurons vs reference vs spikingjelly 2.0")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--size", type=_size, default=(128, 384, 64), help="neurons per step, e.g. 128x384x64")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16", "float16"])
    p.add_argument("--neurons", nargs="+", default=NEURON_TYPES, choices=NEURON_TYPES)
    p.add_argument("--impls", nargs="+", default=IMPLS, choices=IMPLS)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--sj-impl", default=None, choices=["auto", "cuda", "triton", "torch"],
                   help="force spikingjelly's CUDA implementation (its SJ_<NEURON>_CUDA_IMPLEMENTATION "
                        "variables, read when spikingjelly is imported); default: its own choice")
    t = sub.add_parser("train", help="Spikformer-4-384 CIFAR training: stlib vs spikingjelly 2.0")
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--steps", type=int, default=10)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--T", type=int, default=4)
    t.add_argument("--device", default=None)
    t.add_argument("--contenders", nargs="+", default=TRAINERS, choices=TRAINERS)
    t.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="fp32, or bf16 autocast for every contender (default: bf16 on CUDA, fp32 on CPU)")
    args = parser.parse_args(argv)
    if args.what is None:
        report()
    elif args.what == "neurons":
        if args.sj_impl is not None:
            if "spikingjelly" in sys.modules:
                raise SystemExit("--sj-impl must be set before spikingjelly is imported")
            for op in SJ_FUSED_OPS:
                os.environ[f"SJ_{op}_CUDA_IMPLEMENTATION"] = args.sj_impl
        bench_neurons(T=args.T, size=args.size, dtypes=args.dtypes, neurons=args.neurons, impls=args.impls,
                      device=args.device, reps=args.reps, warmup=args.warmup)
    else:
        bench_train(batch=args.batch, steps=args.steps, warmup=args.warmup, T=args.T, device=args.device,
                    contenders=args.contenders, precision=args.precision)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
