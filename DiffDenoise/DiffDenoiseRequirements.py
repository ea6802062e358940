"""What this Slicer must have for DiffDenoise to run, and getting it: a recent enough Python, the packages of
``Resources/requirements.txt`` (installed when the user agrees) and the device chosen. Imports neither Slicer
nor the library at load, so the panel, its self-test and the batch script can all say what is missing before
anything else fails."""

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


def dependencyPlan(missing: list[str], pytorchExtension: bool) -> tuple[str | None, list[str]]:
    """(the torch requirement for the PyTorch extension to install, or None; the requirements for pip) of the
    ``missing`` requirement lines: torch goes through the extension when it is there (it picks the build that
    matches the GPU), everything else through pip."""
    from packaging.requirements import Requirement

    torchLine = next((line for line in missing if Requirement(line).name == "torch"), None)
    if torchLine is None or not pytorchExtension:
        return None, list(missing)
    return torchLine, [line for line in missing if line != torchLine]


def installDependencies(missing: list[str]) -> None:
    """Install the ``missing`` requirement lines (the user has agreed): torch through the PyTorch extension when
    it is installed, the rest with Slicer's installer (``slicer.packaging`` from Slicer 5.12, which offers a
    restart when an updated package was already imported; ``slicer.util.pip_install`` before)."""
    from packaging.requirements import Requirement

    try:
        import PyTorchUtils
    except ImportError:
        PyTorchUtils = None
    torchLine, rest = dependencyPlan(missing, PyTorchUtils is not None)
    if torchLine is not None:
        PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=str(Requirement(torchLine).specifier))
        stillMissing = missingRequirements()  # torch may have brought numpy
        rest = [line for line in rest if line in stillMissing]
    if not rest:  # pip refuses an install without requirements
        return
    try:
        import slicer.packaging as packaging  # Slicer >= 5.12
    except ImportError:
        packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(rest, prompt_install=False, requester="DiffDenoise")  # the panel has asked
    else:
        import slicer

        slicer.util.pip_install(rest)


def deviceProblem(device: str) -> str | None:
    """Why the chosen device cannot run in this Slicer, naming the fix, or None (imports torch)."""
    if device in ("auto", "cpu"):
        return None
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        why = "its torch is a CPU-only build" if torch.version.cuda is None else "torch finds no CUDA GPU or driver"
        return (f"Device cuda is not available in this Slicer: {why}. Choose Device auto or cpu, or install a "
                "CUDA build of torch with the PyTorch extension (module PyTorch Utils) and restart Slicer.")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return ("Device mps (Apple GPU) is not available here: it needs an Apple-silicon Mac with macOS 12.3 or "
                "newer. Choose Device auto or cpu.")
    return None
