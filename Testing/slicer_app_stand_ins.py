"""Stand-ins for the parts of the Slicer application that slicer-core lacks, so the module imports headless.

slicer-core has the real MRML scene, ``slicer.util`` and VTK, but not ``slicer.ScriptedLoadableModule`` (the
base classes of a module, its widget, logic and self-test) or ``slicer.parameterNodeWrapper`` (which binds
the panel's widgets). Only the logic and the self-test run here, so the base classes only need to exist, and
the self-test runs as a plain unittest case; the parameter node keeps its annotations, which the panel tests
read. :func:`install` adds them only where Slicer does not provide its own.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
import unittest
from dataclasses import dataclass


class OutsideSlicerApp:
    """Base of the module, widget and logic classes: nothing to set up without the application."""

    def __init__(self, *args, **kwargs):
        pass


class SelfTestOutsideSlicerApp(unittest.TestCase):
    """Base of the self-test: a unittest case whose messages go to the log instead of a dialog."""

    def delayDisplay(self, message, msec=None):
        logging.info(message)


@dataclass(frozen=True)
class Choice:
    choices: tuple


@dataclass(frozen=True)
class WithinRange:
    minimum: int
    maximum: int


def parameterNodeWrapper(declaration: type) -> type:
    """The declaration as it is: no widgets to bind."""
    return declaration


def install() -> None:
    """Register the stand-ins as ``slicer.ScriptedLoadableModule`` and ``slicer.parameterNodeWrapper`` where
    the installed ``slicer`` has no such modules."""
    import slicer

    stand_ins = {
        "ScriptedLoadableModule": {"ScriptedLoadableModule": OutsideSlicerApp,
                                   "ScriptedLoadableModuleWidget": OutsideSlicerApp,
                                   "ScriptedLoadableModuleLogic": OutsideSlicerApp,
                                   "ScriptedLoadableModuleTest": SelfTestOutsideSlicerApp},
        "parameterNodeWrapper": {"Choice": Choice, "WithinRange": WithinRange,
                                 "parameterNodeWrapper": parameterNodeWrapper},
    }
    for name, members in stand_ins.items():
        full_name = f"slicer.{name}"
        if full_name in sys.modules or importlib.util.find_spec(full_name) is not None:
            continue
        module = types.ModuleType(full_name, __doc__)
        module.__dict__.update(members)
        sys.modules[full_name] = module
        setattr(slicer, name, module)
