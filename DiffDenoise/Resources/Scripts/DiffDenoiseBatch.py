"""Run the ``diffdenoise`` command line in Slicer's Python, without the GUI (batch runs, scripts, schedulers).

    Slicer --no-splash --no-main-window --python-script DiffDenoiseBatch.py cohort --out OUT_FOLDER IN [IN ...]
    Slicer --no-splash --no-main-window --python-script DiffDenoiseBatch.py denoise IN OUT [options]

The arguments are the CLI's (``diffdenoise --help``): ``cohort`` trains on each image (or, with ``--model``,
applies a saved bundle to all) and writes each under its own name, with its geometry and provenance.
``--no-progress`` before the command keeps Slicer's log free of progress bars. This script only checks first
that this Slicer can run the library, and says what is missing: under ``--python-script`` an uncaught error
would leave Slicer running with no window, so every end is an exit code (0 done, 1 failed, 2 bad arguments or
paths).
"""

from __future__ import annotations

import sys
from pathlib import Path

MODULE_FOLDER = Path(__file__).resolve().parents[2]  # Resources/Scripts/..


def problem_running_here() -> str | None:
    """Why this Slicer cannot run the library (its Python, a missing package), with the fix; None if it can."""
    try:
        from DiffDenoiseRequirements import REQUIREMENTS, missingRequirements, unsupportedPython

        missing = missingRequirements()
    except ImportError as error:  # packaging, which every Slicer bundles
        return f"cannot import {error.name or error}: run this script with Slicer (Slicer --no-main-window " \
               "--python-script DiffDenoiseBatch.py ...)"
    if problem := unsupportedPython():
        return problem
    if missing:
        return ("Python packages missing: " + ", ".join(missing) + ". Open the DiffDenoise module in Slicer and "
                f"press Apply once (it installs them), or run: PythonSlicer -m pip install -r {REQUIREMENTS}")
    return None


def run(argv: list[str]) -> int:
    """The ``diffdenoise`` command line with ``argv``, once this Slicer is known to run it."""
    sys.path.insert(0, str(MODULE_FOLDER))  # DiffDenoiseRequirements; an installed module has the library here
    sys.path.append(str(MODULE_FOLDER.parent))  # the library in a checkout
    if problem := problem_running_here():
        print(f"DiffDenoiseBatch: error: {problem}", file=sys.stderr)
        return 1
    from DiffDenoiseLib.cli import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
