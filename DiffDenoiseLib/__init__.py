"""DiffDenoise engine: self-supervised denoising of medical images.

The engine never imports Slicer, Qt or VTK, so it runs the same in the CLI, on servers and inside Slicer.
Importing the package is cheap (no torch); the heavy modules are imported where they are used.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("diffdenoise")
except PackageNotFoundError:  # running from a source tree (e.g. the Slicer module folder)
    __version__ = "0.1.0"

from .errors import BundleError, Cancelled, DiffDenoiseError, InputError  # noqa: E402

__all__ = ["__version__", "BundleError", "Cancelled", "DiffDenoiseError", "InputError"]
