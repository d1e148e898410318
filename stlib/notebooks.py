"""Run a study notebook headlessly with papermill, refusing parameters it does not declare.

papermill itself only logs a warning for a ``-p name value`` that the notebook's
``parameters`` cell lacks, so a typo (``-p nueron PLIF``) silently runs the default neuron.
:func:`run_notebook` checks names against ``papermill.inspect_notebook`` first::

    python -m stlib.notebooks neuron_test outputs/neuron_test_PLIF.ipynb -p neuron PLIF -p preset quick
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .registry import UnknownNameError

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_path(name: str | Path) -> Path:
    path = Path(name)
    if path.suffix == ".ipynb" and path.is_file():
        return path
    candidate = NOTEBOOK_DIR / f"{path.stem}.ipynb"
    if not candidate.is_file():
        raise UnknownNameError("notebook", str(name), [p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")])
    return candidate


def run_notebook(name: str | Path, output_path: str | Path, *, cwd: str | Path | None = None,
                 progress_bar: bool = True, **parameters: Any):
    """Execute a notebook with ``parameters``; unknown parameter names raise UnknownNameError.

    ``progress_bar``: papermill's per-cell bar (sweeps turn it off to keep their logs short).
    """
    import papermill

    path = notebook_path(name)
    declared = papermill.inspect_notebook(str(path))
    for key in parameters:
        if key not in declared:
            raise UnknownNameError(f"parameter of {path.name}", key, declared)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    return papermill.execute_notebook(str(path), str(output_path), parameters=parameters,
                                      kernel_name="python3", progress_bar=progress_bar,
                                      cwd=str(cwd or NOTEBOOK_DIR.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stlib.notebooks")
    parser.add_argument("notebook", help="a notebook name (neuron_test) or path")
    parser.add_argument("output", help="where the executed notebook is written")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args(argv)
    parameters = {name: yaml.safe_load(value) for name, value in args.p}
    from papermill import PapermillExecutionError

    try:
        run_notebook(args.notebook, args.output, **parameters)
    except UnknownNameError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PapermillExecutionError as err:  # the failing cell's error, in one line
        print(f"error in {args.output}, cell {err.exec_count}: {err.ename}: "
              f"{' '.join(err.evalue.split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
