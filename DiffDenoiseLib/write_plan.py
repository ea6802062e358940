"""Every path a run will write, checked before any work starts.

A run first lists its inputs (with their data files and sidecars) and everything it will write (outputs,
extra outputs, their data files and sidecars, ``.bval``/``.bvec``, the model bundle, the checkpoint folder);
:meth:`WritePlan.check` then refuses, with one line that names the path and the fix:

- a write onto any input file, into a folder that holds an input, or onto another write of the same run
  (cohort inputs with one base name), also when the names differ only in letter case (one file on macOS and
  Windows) or lead to the same file through links;
- anything that exists already, unless ``overwrite`` (``--overwrite``); even then a folder is replaced only
  when it holds nothing but a DICOM series, and never a folder given as a file output;
- a format that cannot hold the output (:func:`.io.check_output_format`);
- a folder that cannot be written to, or a disk without room for the images.

Writers check again when they move a finished file into place (:func:`.io.atomic_target`), so a file that
appears while the run works is not replaced either.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import InputError
from .io import Geometry, check_output_format, input_files, is_replaceable_series, output_files, writes_series

OVERWRITE_FLAG = "--overwrite"
_BUNDLE_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class PlannedWrite:
    """One path a run will create: a file, a DICOM series folder or a folder it writes into (checkpoints)."""

    path: Path
    what: str  # for messages: "output", "residual output", "model bundle", ...
    kind: Literal["file", "series", "folder"]
    size: int = 0  # bytes it will take at most (0: not known before the work)
    shared: bool = False  # a provenance sidecar two outputs of one run may share (img.png and img.tif)


def _key(path: Path) -> str:
    """Compare paths as the file system will: links resolved, letter case folded (case-insensitive disks)."""
    return os.path.normcase(os.path.realpath(path)).casefold()


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path):
        path = path.parent
    return path


class WritePlan:
    """Collects a run's inputs and writes, then checks them all at once (:meth:`check`)."""

    def __init__(self, overwrite: bool = False, overwrite_option: str | None = OVERWRITE_FLAG) -> None:
        """``overwrite``: existing outputs may be replaced; ``overwrite_option``: how the caller's user asks for
        that, named in the refusal (None where there is no such choice, as in the Slicer panel)."""
        self.overwrite = overwrite
        self.overwrite_option = overwrite_option
        self.inputs: list[Path] = []
        self.writes: list[PlannedWrite] = []

    def read(self, path: str | os.PathLike, what: str = "input") -> None:
        """An input of the run (image file, DICOM folder, b-value file, bundle): it and its companion files
        are protected. Refuses a path that does not exist."""
        path = Path(path)
        if not path.exists():
            raise InputError(f"{what} not found: {path} (check the path)")
        if not (path.is_file() or path.is_dir()):  # a pipe or device would block or never end
            raise InputError(f"{what} {path} is not a regular file or folder (a pipe or device?): give an image file")
        self.inputs.extend(input_files(path))

    def image(self, path: str | os.PathLike, what: str = "output", shape: tuple[int, ...] | None = None,
              dtype: np.dtype | str | None = None, dwi: bool = False, geometry: Geometry | None = None) -> None:
        """An image output (and its data file, sidecar, and for ``dwi`` its ``.bval``/``.bvec``); its format is
        checked against ``shape``, ``dtype`` and ``geometry`` when given."""
        path = Path(path)
        check_output_format(path, shape, dtype, geometry)
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize if shape is not None and dtype is not None else 0
        main, *companions = output_files(path, dwi)
        self.writes.append(PlannedWrite(main, what, "series" if writes_series(main) else "file", size))
        for companion in companions:
            self.writes.append(PlannedWrite(companion, f"{what}'s companion file", "file",
                                            shared=companion.suffix == ".json"))

    def bundle(self, path: str | os.PathLike) -> Path:
        """The model bundle a run saves (``.safetensors`` appended if missing); returns that path."""
        path = Path(path)
        if path.is_dir():
            raise InputError(f"the model bundle path {path} is a folder: give a file name such as {path / 'model'}"
                             f"{_BUNDLE_SUFFIX}")
        if path.suffix != _BUNDLE_SUFFIX:
            path = path.with_name(path.name + _BUNDLE_SUFFIX)
        self.writes.append(PlannedWrite(path, "model bundle", "file"))
        return path

    def file(self, path: str | os.PathLike, what: str) -> None:
        """Any other file the run creates (a figure)."""
        self.writes.append(PlannedWrite(Path(path), what, "file"))

    def folder(self, path: str | os.PathLike, what: str) -> None:
        """A folder the run writes its own files into and keeps (checkpoints); it may exist already."""
        self.writes.append(PlannedWrite(Path(path), what, "folder"))

    def check(self) -> None:
        """Raise :class:`InputError` for the first write that would lose data or cannot succeed."""
        protected = {_key(path): path for path in self.inputs}
        seen: dict[str, PlannedWrite] = {}
        for write in self.writes:
            key = _key(write.path)
            if key in protected and write.kind != "folder":
                raise InputError(f"the {write.what} {write.path} would overwrite the input {protected[key]}: "
                                 "choose another output name or folder")
            earlier = seen.get(key)
            if earlier is not None and not (earlier.shared and write.shared):
                raise InputError(f"the {earlier.what} and the {write.what} would both be written to "
                                 f"{write.path}: give them different names (cohort: inputs with one base name "
                                 "need separate --out folders)")
            seen[key] = write
        for write in self.writes:
            self._check_against_inputs(write, protected)
            self._check_existing(write)
        self._check_nesting()
        self._check_writable_and_space()

    def _check_against_inputs(self, write: PlannedWrite, protected: dict[str, Path]) -> None:
        if write.kind != "series":
            return
        inside = _key(write.path) + os.sep
        for key, path in protected.items():
            if key.startswith(inside):
                raise InputError(f"the {write.what} folder {write.path} holds the input {path}: choose a new "
                                 "folder name for the DICOM series")

    def _check_existing(self, write: PlannedWrite) -> None:
        path = write.path
        if not os.path.lexists(path):
            return
        for input_path in self.inputs:  # one file under two names (hard link, case-insensitive disk)
            if input_path.exists() and path.exists() and os.path.samefile(path, input_path):
                raise InputError(f"the {write.what} {path} is the same file as the input {input_path}: choose "
                                 "another output name")
        if write.kind == "folder":
            if not path.is_dir():
                raise InputError(f"the {write.what} {path} is a file, not a folder: give a folder name")
            return
        if write.kind == "file" and path.is_dir():
            raise InputError(f"the {write.what} {path} is an existing folder: give a file name, such as "
                             f"{path / 'denoised.nii.gz'}")
        if write.kind == "series" and path.is_dir() and not any(path.iterdir()):
            return  # an empty folder: nothing in it to lose
        if write.kind == "series" and path.is_dir() and not is_replaceable_series(path):
            entries = sum(1 for _ in path.iterdir())
            raise InputError(f"the {write.what} {path} is an existing folder holding {entries} entries that are not "
                             f"a DICOM series written by DiffDenoise: nothing in it is replaced; give a file name "
                             f"inside it (such as {path / 'denoised.nii.gz'}) or a new folder name for a DICOM series")
        if write.kind == "series" and not path.is_dir():
            raise InputError(f"the {write.what} {path} is an existing file, not a DICOM series folder: choose a "
                             "new folder name")
        if not self.overwrite:
            fix = f", or pass {self.overwrite_option} to replace it" if self.overwrite_option else ""
            raise InputError(f"the {write.what} {path} already exists: choose a new name{fix}")

    def _check_nesting(self) -> None:
        """A file cannot be written inside a series folder of the same run (the series replaces the folder)."""
        for series in (w for w in self.writes if w.kind == "series"):
            inside = _key(series.path) + os.sep
            for write in self.writes:
                if write is not series and _key(write.path).startswith(inside):
                    raise InputError(f"the {write.what} {write.path} would be inside the DICOM series folder "
                                     f"{series.path}: write it elsewhere")

    def _check_writable_and_space(self) -> None:
        needed: dict[Path, int] = {}
        for write in self.writes:
            start = write.path if write.kind == "folder" else write.path.parent
            ancestor = _existing_ancestor(start)
            if not ancestor.is_dir():
                raise InputError(f"cannot write the {write.what} {write.path}: {ancestor} is a file, not a folder")
            needed[ancestor] = needed.get(ancestor, 0) + write.size
        for write in self.writes:  # the writers' temporary name adds ".<name>.partial-XXXXXXXX" (18 characters)
            limit = _name_max(_existing_ancestor(write.path.parent))
            if len(write.path.name.encode()) + _STAGING_EXTRA > limit:
                raise InputError(f"the {write.what} name {write.path.name[:40]}... is too long for this disk "
                                 f"(at most {limit - _STAGING_EXTRA} bytes): choose a shorter name")
        for ancestor, size in needed.items():
            try:
                with tempfile.TemporaryFile(dir=ancestor, prefix=".diffdenoise-write-test-"):
                    pass
            except OSError as error:
                raise InputError(f"cannot write to {ancestor}: {error.strerror or error} (choose a folder you "
                                 "can write to)") from None
            free = shutil.disk_usage(ancestor).free
            if size > free:
                raise InputError(f"the outputs need about {_megabytes(size)} and {ancestor} has "
                                 f"{_megabytes(free)} free: free some space or write elsewhere")


_STAGING_EXTRA = 24  # what a temporary name adds to an output's name (".", ".partial-", 8 random, margin)


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # not reported (Windows): the common limit
        return 255


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
