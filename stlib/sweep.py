"""Sweeps: one papermill notebook per grid point, restartable, ``python -m stlib.sweep FILE``.

A sweep file (``params/sweeps/<study>.yaml``) names a study notebook, the parameters every
point shares and a grid whose cartesian product gives the points::

    notebook: neuron_test          # notebooks/<name>.ipynb
    study: neuron_test             # the study the notebook writes its runs under
    fixed: {seed: 0}
    grid:
      model:                       # a mapping value sets several parameters at once;
        - {model: spikformer_4_384, params_file: params/spikformer/cifar10.yaml}
        - {model: sdt_2_512, params_file: params/sdt/cifar10.yaml}
      neuron: [LIF, IF, PLIF]      # its label in point names is the value of the axis' own key

Each point runs through :func:`stlib.notebooks.run_notebook` (a parameter the notebook does
not declare is refused) into ``<output_dir>/<study>/notebooks/<point>.ipynb``. Before running,
the runner predicts the run folder the notebook will use (the same
:func:`stlib.params.from_notebook` call, with the notebook's own defaults read by papermill), so:

* a point whose ``summary.json`` says ``finished`` is skipped without starting a kernel;
* an unfinished point is run again and ``fit`` resumes it from ``checkpoints/last.pt``;
* a failing point (its notebook raised, or its model is not registered yet) is recorded and
  the sweep goes on;
* ``<output_dir>/<study>/sweep_status.csv`` (point, status, error, seconds, run_dir) is
  rewritten after every point, so a killed sweep shows where it stopped, and rerunning the
  same command carries on from there; ``--list`` prints each point's state without running.

Command line (``--only`` and ``--set`` repeat; ``--only`` values of one key are alternatives)::

    python -m stlib.sweep params/sweeps/neuron_test.yaml --preset quick --only model=sdt_2_512
    python -m stlib.sweep params/sweeps/if_threshold_test.yaml --set epochs=100 --list
"""
from __future__ import annotations

import argparse
import ast
import csv
import functools
import io
import itertools
import json
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .atomic import atomic_write_text
from .config import resolve_path
from .params import NOTEBOOK_PARAMETERS, ConfigError, from_notebook, params_for
from .registry import UnknownNameError, closest

REPO_ROOT = Path(__file__).resolve().parent.parent
SWEEP_DIR = REPO_ROOT / "params" / "sweeps"
#: The keys a sweep file may hold, with what each means (the error for an unknown key lists them).
SWEEP_KEYS = {
    "notebook": "notebooks/<name>.ipynb to execute per point (required)",
    "study": "the study folder the notebook writes to: outputs/<study>/ (required)",
    "description": "free text: which published table the sweep reproduces",
    "fixed": "parameters shared by every point",
    "grid": "axis -> list of values (or of mappings of several parameters)",
}
#: Notebook parameters that are config keys but not plain ``from_notebook`` names.
STATUS_COLUMNS = ["point", "status", "error", "seconds", "run_dir"]


class SweepError(ValueError):
    """A sweep file that cannot be run (unknown key, bad grid, missing notebook...)."""


@dataclass
class Sweep:
    """A validated sweep file."""

    notebook: str
    study: str
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    description: str = ""
    source: str | None = None

    def points(self) -> list[tuple[str, dict[str, Any]]]:
        """``[(point_name, parameters), ...]`` over the cartesian product of the grid axes."""
        axes = list(self.grid)
        out = []
        for combo in itertools.product(*(self.grid[a] for a in axes)):
            params = dict(self.fixed)
            labels = []
            for axis, value in zip(axes, combo):
                if isinstance(value, Mapping):
                    params.update(value)
                    label = value.get(axis, "+".join(str(v) for v in value.values()))
                else:
                    params[axis] = value
                    label = value
                labels.append(f"{axis}-{label}")
            out.append(("__".join(labels) or "default", params))
        return out


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; every error names the file and the valid choices."""
    path = Path(path)
    if not path.is_file() and (SWEEP_DIR / path.name).is_file():
        path = SWEEP_DIR / path.name
    if not path.is_file():
        available = sorted(p.name for p in SWEEP_DIR.glob("*.yaml"))
        raise SweepError(f"sweep file {str(path)!r} not found; available in {SWEEP_DIR}: "
                         f"{', '.join(available)}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping with keys {', '.join(SWEEP_KEYS)}")
    for key in raw:
        if key not in SWEEP_KEYS:
            near = closest(str(key), list(SWEEP_KEYS))
            hint = f"; did you mean {near!r}?" if near else ""
            valid = "; ".join(f"{k}: {v}" for k, v in SWEEP_KEYS.items())
            raise SweepError(f"{path}: unknown key {key!r}{hint} valid keys: {valid}")
    for key in ("notebook", "study"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise SweepError(f"{path}: {key!r} is required ({SWEEP_KEYS[key]})")
    fixed = raw.get("fixed") or {}
    grid = raw.get("grid") or {}
    if not isinstance(fixed, dict):
        raise SweepError(f"{path}: 'fixed' must be a mapping of parameter: value, got {fixed!r}")
    if not isinstance(grid, dict):
        raise SweepError(f"{path}: 'grid' must be a mapping of axis: [values], got {grid!r}")
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid axis {axis!r} must be a non-empty list, got {values!r}")
    sweep = Sweep(notebook=raw["notebook"], study=raw["study"], fixed=dict(fixed),
                  grid={str(a): list(v) for a, v in grid.items()},
                  description=str(raw.get("description") or ""), source=str(path))
    _check_parameter_names(sweep, path)
    _check_study(sweep, path)
    names = [name for name, _ in sweep.points()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # two points would write the same executed notebook
        raise SweepError(f"{path}: grid points share the name {', '.join(repeated)}; a mapping "
                         f"value is labelled by its key named like its axis, or by all its "
                         f"values when it has no such key")
    return sweep


def _check_study(sweep: Sweep, path: Path) -> None:
    """The sweep's ``study`` must be the one the notebook passes to ``from_notebook``.

    The study notebooks name their study as a literal (``study="neuron_test"``); the runner
    predicts run folders from the sweep's ``study``, so a mismatch would rerun finished points.
    """
    import nbformat

    from .notebooks import notebook_path

    nb = nbformat.read(notebook_path(sweep.notebook), as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    named = set(re.findall(r"""\bstudy\s*=\s*["']([^"']+)["']""", code))
    if named and sweep.study not in named:
        raise SweepError(f"{path}: study {sweep.study!r} is not the study notebooks/"
                         f"{sweep.notebook}.ipynb writes to ({', '.join(sorted(named))})")


def _check_parameter_names(sweep: Sweep, path: Path) -> None:
    """Every parameter a point sets must be declared by the notebook (papermill would ignore it)."""
    declared = notebook_defaults(sweep.notebook)
    names = set(sweep.fixed)
    for axis, values in sweep.grid.items():
        for value in values:
            names.update(value if isinstance(value, Mapping) else [axis])
    for name in sorted(names):
        if name not in declared:
            error = UnknownNameError(f"parameter of {sweep.notebook}", name, declared)
            raise SweepError(f"{path}: {error}")


def notebook_defaults(notebook: str) -> dict[str, Any]:
    """The notebook's ``parameters`` cell as values (papermill reports them as source text)."""
    from .notebooks import notebook_path

    try:
        path = notebook_path(notebook)
    except UnknownNameError as err:
        raise SweepError(str(err)) from None
    return dict(_inspect(str(path), path.stat().st_mtime))


@functools.lru_cache(maxsize=32)
def _inspect(path: str, mtime: float) -> dict[str, Any]:
    """Cached per file version: a sweep asks once per point."""
    import papermill

    defaults = {}
    for name, info in papermill.inspect_notebook(path).items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            defaults[name] = info["default"]
    return defaults


def predicted_config(sweep: Sweep, params: Mapping[str, Any]):
    """The Config the notebook will build for ``params`` (its defaults filled in).

    Mirrors the study notebooks: a ``params_file`` parameter is used as it is; without one,
    ``model`` + ``dataset`` pick the recipe through :func:`stlib.params_for`. Model names are
    checked first so an architecture that is not registered yet fails with that message.
    """
    from .models import list_models

    values = {**notebook_defaults(sweep.notebook), **params}
    model = values.get("model")
    if model and model not in list_models():
        raise UnknownNameError("model (not registered in this checkout)", model, list_models())
    params_file = values.get("params_file")
    kwargs = {k: v for k, v in values.items() if k in NOTEBOOK_PARAMETERS}
    if not params_file and model and values.get("dataset"):
        params_file = params_for(model, values["dataset"])
        kwargs.pop("dataset")  # the recipe names it; the preset may change it (digits)
    kwargs["study"] = sweep.study
    # a prediction trains nothing: the notebook itself refuses a full recipe on a CPU
    return from_notebook(params_file, values.get("preset") or None, confirm_full_run=True,
                         **kwargs)


def _summary_status(run_dir: Path) -> str | None:
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError):
        return None


def read_status(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {row["point"]: row for row in csv.DictReader(f)}


def write_status(path: Path, rows: Mapping[str, Mapping[str, Any]]) -> None:
    """Rewrite the status file atomically (a kill mid-write leaves the previous one)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=STATUS_COLUMNS)
    writer.writeheader()
    for row in rows.values():
        writer.writerow({k: row.get(k, "") for k in STATUS_COLUMNS})
    atomic_write_text(path, text.getvalue())


def select(points: list[tuple[str, dict[str, Any]]], only: Iterable[str] | None):
    """Keep points matching every ``key=value`` of ``only`` (several values of one key: any)."""
    wanted: dict[str, set[str]] = {}
    for text in only or []:
        if "=" not in text:
            raise SweepError(f"--only {text!r} must look like key=value")
        key, value = text.split("=", 1)
        wanted.setdefault(key.strip(), set()).add(value.strip())
    known = sorted({k for _, params in points for k in params})
    for key in wanted:
        if key not in known:
            raise SweepError(str(UnknownNameError("--only key", key, known)))
    return [(name, params) for name, params in points
            if all(str(params.get(k)) in vals for k, vals in wanted.items())]


def plan(sweep: Sweep, *, preset: str | None = None, only: Iterable[str] | None = None,
         set_params: Mapping[str, Any] | None = None, output_dir: str | Path | None = None
         ) -> tuple[Path, list[tuple[str, dict[str, Any]]]]:
    """The study folder and the selected ``(point, parameters)`` with the command-line extras."""
    extra = dict(set_params or {})
    if preset:
        extra["preset"] = preset
    if output_dir is not None:
        extra["output_dir"] = str(output_dir)
    declared = notebook_defaults(sweep.notebook)
    for name in extra:
        if name not in declared:
            error = UnknownNameError(f"parameter of {sweep.notebook}", name, declared)
            raise SweepError(str(error))
    out_root = resolve_path(extra.get("output_dir") or sweep.fixed.get("output_dir")
                       or declared.get("output_dir") or "outputs") / sweep.study
    return out_root, select([(n, {**p, **extra}) for n, p in sweep.points()], only)


def point_state(sweep: Sweep, params: Mapping[str, Any]) -> tuple[str, str]:
    """``(state, run_dir or error)`` of one point without running it: finished / to run / error."""
    try:
        run_dir = resolve_path(predicted_config(sweep, params).run_dir)
    except Exception as err:
        return "error", _short_error(err)
    status = _summary_status(run_dir)
    return ("finished" if status == "finished" else f"to run ({status or 'new'})"), str(run_dir)


def run_sweep(sweep: Sweep | str | Path, *, preset: str | None = None,
              only: Iterable[str] | None = None, set_params: Mapping[str, Any] | None = None,
              output_dir: str | Path | None = None, log=print) -> dict[str, dict[str, Any]]:
    """Run every (selected) point of ``sweep``; returns ``{point: status row}``.

    ``preset`` and ``output_dir`` become the notebook parameters of the same names;
    ``set_params`` overrides fixed parameters (``{"epochs": 2}``).
    """
    from .notebooks import run_notebook

    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    out_root, points = plan(sweep, preset=preset, only=only, set_params=set_params,
                            output_dir=output_dir)
    status_path = out_root / "sweep_status.csv"
    rows = read_status(status_path)
    log(f"sweep {sweep.source or sweep.study}: {len(points)} point(s) -> {out_root}")
    for index, (name, params) in enumerate(points, 1):
        start = time.time()
        row: dict[str, Any] = {"point": name, "status": "running", "error": "", "seconds": "",
                               "run_dir": ""}
        try:
            run_dir = resolve_path(predicted_config(sweep, params).run_dir)
            row["run_dir"] = str(run_dir)
            if _summary_status(run_dir) == "finished":
                row.update(status="skipped", error="already finished", seconds=0)
                rows[name] = row
                write_status(status_path, rows)
                log(f"[{index}/{len(points)}] {name}: finished before, skipped")
                continue
            rows[name] = row
            write_status(status_path, rows)  # a kill now leaves 'running' on this point
            log(f"[{index}/{len(points)}] {name}: running -> {run_dir}")
            run_notebook(sweep.notebook, out_root / "notebooks" / f"{name}.ipynb",
                         **params)
            status = _summary_status(run_dir)
            if status == "finished":
                row.update(status="finished")
            else:
                row.update(status="unverified",
                           error=f"the notebook ran but {run_dir}/summary.json says {status!r}; "
                                 f"does the sweep's study match the notebook's?")
        except KeyboardInterrupt:
            row.update(status="interrupted", seconds=round(time.time() - start, 1))
            rows[name] = row
            write_status(status_path, rows)
            raise
        except Exception as err:  # a failed point is recorded; the sweep goes on
            message = _short_error(err)
            row.update(status="failed", error=message)
            log(f"[{index}/{len(points)}] {name}: FAILED: {message}")
        row["seconds"] = round(time.time() - start, 1)
        rows[name] = row
        write_status(status_path, rows)
    return {name: rows[name] for name, _ in points}


def _short_error(err: Exception) -> str:
    """One line: papermill's error carries the notebook's exception name and message."""
    name = getattr(err, "ename", type(err).__name__)
    value = getattr(err, "evalue", str(err))
    text = f"{name}: {value}" if value else name
    frames = traceback.extract_tb(err.__traceback__)
    if frames and not isinstance(err, (ConfigError, UnknownNameError, SweepError)) \
            and not hasattr(err, "ename"):  # an error of the runner itself: say where
        text += f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})"
    return " ".join(text.split())[:1500]  # room for the list of valid names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stlib.sweep",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("sweep", help="params/sweeps/<study>.yaml")
    parser.add_argument("--preset", default=None,
                        help="notebook preset for every point, e.g. quick")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                        help="run only points whose parameter KEY equals VALUE (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a notebook parameter for every point, e.g. epochs=2")
    parser.add_argument("--output-dir", default=None, help="notebook output_dir (default: outputs)")
    parser.add_argument("--list", action="store_true",
                        help="print each point's state (finished / to run / error) and exit")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
        sets = {}
        for text in args.set:
            if "=" not in text:
                raise SweepError(f"--set {text!r} must look like name=value")
            key, value = text.split("=", 1)
            sets[key.strip()] = yaml.safe_load(value)
        if args.list:  # what a run would do, point by point
            _, points = plan(sweep, preset=args.preset, only=args.only, set_params=sets,
                             output_dir=args.output_dir)
            for name, params in points:
                state, where = point_state(sweep, params)
                print(f"{name}\t{state}\t{where}")
            return 0
        rows = run_sweep(sweep, preset=args.preset, only=args.only, set_params=sets,
                         output_dir=args.output_dir)
    except (SweepError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = [n for n, r in rows.items() if r["status"] == "failed"]
    print(f"{len(rows) - len(failed)} point(s) done, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
