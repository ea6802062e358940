"""The engine must run without Slicer, Qt or VTK (CLI, servers, torchrun)."""

import pkgutil
import subprocess
import sys

import DiffDenoiseLib


def test_engine_imports_no_slicer_qt_or_vtk():
    modules = [m.name for m in pkgutil.walk_packages(DiffDenoiseLib.__path__, "DiffDenoiseLib.")]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('slicer', 'vtk', 'vtkmodules', 'qt', 'ctk'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len(modules) >= 10
    assert result.stdout.strip() == ""


def test_package_import_is_light():
    result = subprocess.run([sys.executable, "-c", "import sys, DiffDenoiseLib; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
