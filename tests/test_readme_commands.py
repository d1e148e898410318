"""Every command in the README, in the README's order, on a fresh copy of the repository.

``README_COMMANDS`` says, for each command the README shows (fenced ``bash`` blocks, indented
code lines and inline code that start with a program), how a CPU machine with no dataset and no
internet checks it: it runs as written; a sweep lists its plan (``--list``: every point's
notebook parameters and run folder, nothing trained); a command that needs what this machine
lacks must end with the one clear error the README promises; or it is not run here, for the
reason given. A command added to the README without a row fails the first test.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PROGRAMS = ("pip ", "papermill ", "python -m ", "pytest", "torchrun ", "conda ", "tensorboard ")
ENV_PREFIX = re.compile(r"^(?:[A-Z_]+=\S+ )*")


@dataclass(frozen=True)
class Check:
    how: str  # "run" | "list" | "fails" | "skip"
    why: str = ""  # skip: why not here; fails: what the machine lacks
    expect: str = ""  # text the output must hold
    command: str = ""  # what runs instead of the README text (an optional part taken)
    needs_shared: bool = False  # reads ../shared/data beside the checkout


RUN, LIST = Check("run"), Check("list")
SUITE = Check("skip", "the test suite itself (CI runs it)")
CPU_REFUSAL = "a full recipe"

README_COMMANDS: dict[str, Check] = {
    'pip install -e ".[dev]"': Check("skip", ".ci/run installs it into a fresh venv first"),
    'conda env create -f environment.yml && conda activate stlib': Check(
        "skip", "conda is not on this machine; environment.yml defers to pyproject.toml"),
    'pip install "torch==2.14.*" "torchvision==0.29.*" --index-url '
    'https://download.pytorch.org/whl/cpu': Check("skip", "download.pytorch.org is unreachable here"),
    "papermill notebooks/neuron_test.ipynb outputs/neuron_test_PLIF.ipynb -k python3 "
    "-p neuron PLIF -p preset quick": RUN,
    "python -m stlib.notebooks neuron_test out.ipynb -p neuron PLIF -p preset quick": RUN,
    "pytest": SUITE,
    'pytest -m "not slow"': SUITE,
    "pytest tests/<file>.py": SUITE,
    "python -m stlib.train params/spikformer/cifar10.yaml --set neuron.type=PLIF "
    "--set train.epochs=5 [--preset quick]": Check(
        "run", command="python -m stlib.train params/spikformer/cifar10.yaml --set "
                       "neuron.type=PLIF --set train.epochs=5 --preset quick"),
    "tensorboard --logdir outputs": Check(
        "skip", "a server that runs until stopped; test_train reads the event files it serves"),
    "pip install aedat": Check("skip", "an optional reader, from the network"),
    "python -m stlib.train params/spikformer/cifar10.yaml --preset quick_events": Check(
        "run", needs_shared=True),
    "papermill notebooks/architecture_reproduction.ipynb out.ipynb -k python3 -p model sdt_8_768 "
    "-p dataset imagenet -p checkpoint ~/ckpt/sdt_8_768.pth": Check(
        "fails", "ImageNet and the released checkpoint", expect="DatasetNotFoundError: imagenet"),
    **{f"python -m stlib.sweep params/sweeps/{name}.yaml": LIST for name in (
        "neuron_test", "encoding_test", "cifar_architectures", "if_threshold_test",
        "meta_transformer_ablation", "sequential", "surrogate_test")},
    "papermill notebooks/results.ipynb outputs/results/results.ipynb -k python3": RUN,
    "papermill notebooks/meta_transformer_ablation.ipynb out.ipynb -k python3 -p model sdt_2_512 "
    "-p attention random_sdsa -p preset quick": RUN,
    "papermill notebooks/sequential_classification.ipynb out.ipynb -k python3 -p dataset psmnist":
        Check("fails", "a GPU: the full psMNIST recipe on a CPU is refused",
              expect=f"ConfigError: params/spikformer/psmnist.yaml is {CPU_REFUSAL}"),
    "python -m stlib.train params/spikformer/cifar10.yaml --preset quick": RUN,
    "papermill notebooks/visualization.ipynb out.ipynb -k python3 -p run_dir "
    "outputs/spikformer_cifar10/<run_id>": RUN,  # <run_id>: the run the command above made
    "papermill notebooks/visualization.ipynb out.ipynb -k python3 -p model spikformer_4_384 "
    "-p checkpoint weights.pt -p images ../shared/data/cifar_samples -p method gradcam++": Check(
        "run", needs_shared=True),  # weights.pt: a spikformer_4_384 state dict the test saves
    "torchrun --nproc_per_node=8 -m stlib.train params/spikformer/cifar10.yaml "
    "--set neuron.type=PLIF": Check(
        "skip", "8 GPUs; tests/test_long_runs.py runs the same DDP path with 2 gloo processes"),
    "torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 "
    "--rdzv_id=spikformer -m stlib.train params/spikformer/cifar10.yaml": Check(
        "skip", "two GPU nodes (documented, not tested)"),
    "pytest tests/test_kernels.py": SUITE,
    "python -m stlib.bench neurons": Check("skip", "the README's GPU form; the CPU form below runs"),
    "python -m stlib.bench train": Check("skip", "the README's GPU form; the CPU form below runs"),
    "OMP_NUM_THREADS=2 python -m stlib.bench": Check(
        "skip", "the full report, about 7 minutes of compiling and timing on 2 cores; "
                "tests/test_bench.py runs each of its tables at a tiny size"),
    "OMP_NUM_THREADS=2 python -m stlib.bench neurons --size 8x384x256 --dtypes float32 "
    "--impls stlib stlib-reference spikingjelly --reps 20": RUN,
    "OMP_NUM_THREADS=2 python -m stlib.bench train --batch 8 --steps 4 --contenders stlib spikingjelly": RUN,
}


def is_command(text: str) -> bool:
    rest = text[ENV_PREFIX.match(text).end():]
    return rest.startswith(PROGRAMS) or rest == "pytest"


def readme_commands(text: str) -> list[str]:
    """The README's commands in order: fenced ``bash`` lines (``\\`` continuations joined,
    comments dropped), indented code lines and inline code that start with a program."""
    found: list[str] = []
    lines, fence, i = text.splitlines(), None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
        elif fence == "bash" or (fence is None and line.startswith("    ") and is_command(line.strip())):
            code = line.strip()
            while code.endswith("\\") and i + 1 < len(lines):
                i += 1
                code = f"{code[:-1].rstrip()} {lines[i].strip()}"
            code = re.sub(r"\s+#.*$", "", code)
            if code and is_command(code):
                found.append(code)
        elif fence is None:
            found += [m for m in re.findall(r"`([^`]+)`", line) if is_command(m)]
        i += 1
    return found


def test_every_readme_command_is_checked():
    commands = readme_commands((REPO / "README.md").read_text())
    assert len(commands) > 20  # the extraction sees the README at all
    missing = [c for c in commands if c not in README_COMMANDS]
    stale = [c for c in README_COMMANDS if c not in commands]
    assert not missing, f"README commands without a row in README_COMMANDS: {missing}"
    assert not stale, f"rows for commands the README no longer has: {stale}"


def fresh_copy(root: Path) -> Path:
    """The repository's files as a fresh clone has them (what git tracks or would add), with
    ``../shared`` beside them when this checkout has it."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode()
    clone = root / "main"
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    if SHARED.is_dir():
        (root / "shared").symlink_to(SHARED)
    return clone


def prepare(command: str, clone: Path) -> str:
    """Fill what the README leaves to the reader: ``<run_id>`` (the run made just before) and
    the ``weights.pt`` a user would bring."""
    if "<run_id>" in command:
        runs = (clone / "outputs/spikformer_cifar10").glob("*/summary.json")
        latest = max(runs, key=lambda p: p.stat().st_mtime).parent
        command = command.replace("<run_id>", latest.name)
    if "weights.pt" in command and not (clone / "weights.pt").exists():
        from stlib.models import create_model

        torch.save(create_model("spikformer_4_384").state_dict(), clone / "weights.pt")
    return command


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU machine's behaviour")
def test_readme_commands_run_on_a_fresh_clone_in_order(tmp_path):
    clone = fresh_copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STLIB_")}
    env.update(PYTHONPATH=str(clone), OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    failures, done = [], set()
    for command in readme_commands((REPO / "README.md").read_text()):
        check = README_COMMANDS[command]
        if command in done or check.how == "skip" or (check.needs_shared and not SHARED.is_dir()):
            continue
        done.add(command)
        shell = prepare(check.command or command, clone) + (" --list" if check.how == "list" else "")
        tic = time.perf_counter()
        result = subprocess.run(shell, shell=True, cwd=clone, env=env, capture_output=True,
                                text=True, timeout=600)
        output = result.stdout + result.stderr
        print(f"{time.perf_counter() - tic:6.1f} s  rc {result.returncode}  {shell}")
        if check.how in ("run", "list") and result.returncode != 0:
            failures.append(f"{shell}\n  exit {result.returncode}: {output[-1500:]}")
        elif check.how == "list" and "\terror\t" in output:
            failures.append(f"{shell}\n  a point cannot be planned: {output[-1500:]}")
        elif check.how == "fails" and (result.returncode == 0 or check.expect not in output):
            failures.append(f"{shell}\n  should end with {check.expect!r} (it needs "
                            f"{check.why}); exit {result.returncode}: {output[-1500:]}")
    assert not failures, "\n\n".join(failures)
    assert (clone / "outputs/results/neuron_test.png").is_file()  # the results notebook drew
