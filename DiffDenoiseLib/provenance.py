"""Provenance of a result: which method, preset, model and software made it, and when.

Every output file and Slicer node carries one record (see :func:`.io.write_volume` for where it goes in each
format), so a denoised image can be traced back to the exact model: ``bundle_sha256`` is the hash of weights
and settings a saved bundle records (also for a model trained on the input and never saved).
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .bundle import ModelBundle

KEY_PREFIX = "DiffDenoise_"  # header keys: DiffDenoise_method, DiffDenoise_preset, ...


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Provenance:
    """What made an output. ``model`` says whether the networks were ``trained on the input`` or applied from
    a saved ``bundle``."""

    method: str
    preset: str
    bundle_sha256: str
    model: str
    package_version: str = __version__
    created: str = field(default_factory=_now)

    @classmethod
    def of(cls, bundle: ModelBundle, trained_on_input: bool) -> Provenance:
        """The record of an output made by ``bundle``, trained on that same input or applied from a file."""
        from .bundle import bundle_sha256

        return cls(bundle.method, bundle.record.preset, bundle_sha256(bundle),
                   "trained on the input" if trained_on_input else "bundle")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, str]) -> Provenance:
        """Inverse of :meth:`as_dict`; unknown keys (from newer versions) are ignored."""
        return cls(**{f.name: str(values[f.name]) for f in fields(cls) if f.name in values})

    def header_fields(self) -> dict[str, str]:
        """Key/value header fields (NRRD, MetaImage): ``DiffDenoise_<name>``."""
        return {KEY_PREFIX + name: value for name, value in self.as_dict().items()}

    @classmethod
    def from_header_fields(cls, header: dict[str, str]) -> Provenance | None:
        """Inverse of :meth:`header_fields`; None when the header has no DiffDenoise record."""
        values = {key[len(KEY_PREFIX):]: value for key, value in header.items() if key.startswith(KEY_PREFIX)}
        return cls.from_dict(values) if "method" in values else None

    def summary(self) -> str:
        """One line of at most 80 characters (the NIfTI ``descrip`` field): version, method, preset, the first
        12 hex digits of the bundle hash and the date."""
        return (f"DiffDenoise {self.package_version} {self.method} {self.preset} "
                f"{self.bundle_sha256[:12]} {self.created[:10]}")[:80]
