"""What this Slicer must have for DiffDenoise to run: a recent enough Python and the packages of
``Resources/requirements.txt``. Imports neither Slicer nor the library, so the panel, its self-test and the
batch script can all say what is missing before anything else fails."""

from __future__ import annotations

import os
import sys

REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "requirements.txt")
# The library needs Python 3.11 (pyproject.toml's requires-python): Slicer 5.10 and later ship 3.12, Slicer 5.8
# ships 3.9, where the library cannot even be imported.
SUPPORTED_SLICER = "3D Slicer 5.10 or newer"
MINIMUM_PYTHON = (3, 11)


def unsupportedPython(version: tuple[int, ...] = tuple(sys.version_info)) -> str | None:
    """The message shown when this Slicer's Python is older than the library needs, else None."""
    if tuple(version[:2]) >= MINIMUM_PYTHON:
        return None
    return (f"DiffDenoise needs {SUPPORTED_SLICER} (Python {'.'.join(map(str, MINIMUM_PYTHON))} or newer); this "
            f"Slicer runs Python {version[0]}.{version[1]}. Install the current Slicer from "
            "https://download.slicer.org and DiffDenoise from its Extensions Manager.")


def missingRequirements(path: str = REQUIREMENTS) -> list[str]:
    """The lines of ``requirements.txt`` that this Python does not satisfy (absent, or outside the range).

    Slicer 5.12 has ``slicer.packaging.pip_check`` for this, but 5.10 and 5.11 do not; ``packaging`` is bundled
    with every Slicer, so the same check runs in each."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing = []
    with open(path) as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            requirement = Requirement(line)
            try:
                installed = version(requirement.name)
            except PackageNotFoundError:
                missing.append(line)
                continue
            if not requirement.specifier.contains(installed, prereleases=True):
                missing.append(line)
    return missing
