"""Every user option of the two jobs, once: :class:`DenoiseOptions` (a 2D image or 3D volume) and
:class:`DWIOptions` (a 4D diffusion MRI series).

Each field carries its default, a one-line doc, its CLI flag and its Slicer panel name
(:class:`OptionSpec`). The CLI parser (:func:`add_arguments`; the batch script runs the CLI), the Slicer parameter
node (:func:`panel_parameters`), the panel's background command line (:meth:`DenoiseOptions.to_cli_args`)
and the library's keyword form (:meth:`DenoiseOptions.of`) are built from these records, and values are
checked once, here, raising :class:`.errors.InputError`. Adding an option is one field here plus the code
that uses it.

Torch-free and cheap to import: the Slicer panel loads it before torch is installed.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import InputError

METHODS = ("diffdenoise", "diffusion", "bsn")  # full pipeline (default), SRDS output without distillation, BSN
# auto: measured; iid / correlated: the blind-spot network (family measured); gaussian, poisson, gamma (speckle):
# i.i.d. noise of that family (its exact recorruption split); rician: i.i.d., split as Gaussian, its bias
# taken out of the output
NOISE_CHOICES = ("auto", "iid", "correlated", "gaussian", "poisson", "gamma", "rician")
PRESETS = ("quick", "standard", "full")  # the keys of presets.PRESETS and presets.DDM2_PRESETS
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# input - output; SRDS pair disagreement; the BSN output (the diffusion condition); the SRDS output
EXTRA_OUTPUTS = ("residual", "uncertainty", "bsn", "srds")
MAX_HALF_WIDTH = 4  # the most neighbouring slices per side a network reads
CONTEXT_CHOICES = ("auto", *range(MAX_HALF_WIDTH + 1))  # auto: chosen from the volume; 0: each slice alone
DWI_METHODS = ("ddm2", "stage1")  # Stages I-III; the Stage I denoiser alone
SAMPLERS = ("accelerated", "full")  # DDIM over a few steps; every step of the Markov chain
SEED_RANGE = (-(2 ** 63), 2 ** 63 - 1)  # what torch.manual_seed accepts


@dataclass(frozen=True)
class OptionSpec:
    """What a front end needs to know of one option besides its name and default.

    ``choices`` lists the allowed values (each of them, for a tuple-valued option: ``many``); ``minimum`` and
    ``maximum`` bound a whole number, whose default None means "the preset's"; ``accepts`` allows values
    beyond the choices (``cuda:1``, explicit settings objects). ``flag`` is the CLI flag (default
    ``--name-with-dashes``; None: library only); ``panel`` the Slicer parameter and logic keyword (default the
    camelCase name) and ``panel_maximum`` the panel spin box's top, where 0 shows "the preset's"."""

    doc: str
    choices: tuple | None = None
    minimum: int | None = None
    maximum: int | None = None
    many: bool = False
    accepts: Callable[[Any], bool] | None = None
    flag: str | None = ""
    panel: str = ""
    on_panel: bool = False
    panel_maximum: int | None = None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed (a phrase), or None."""
        if self.many:
            if isinstance(value, str) or not isinstance(value, (tuple, list)):
                return f"{value!r} is not a list of {_listed(self.choices)}"
            return next(filter(None, map(self._one_problem, value)), None)
        return self._one_problem(value)

    def _one_problem(self, value: Any) -> str | None:
        if self.accepts is not None and self.accepts(value):
            return None
        if self.choices is not None:
            return None if _is_choice(value, self.choices) else f"{value!r} is not one of {_listed(self.choices)}"
        if value is None and self.minimum is not None:
            return None  # a whole number left to the preset
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{value!r} is not a whole number"
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            bounds = f"at least {self.minimum}" if self.maximum is None else f"from {self.minimum} to {self.maximum}"
            return f"{value} is out of range: use a whole number {bounds}"
        return None

    def parse(self, text: str) -> Any:
        """A command-line word as the option's value; a usage error (one line) saying what is allowed."""
        value: Any = text
        if self.choices is None:
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        else:
            value = next((choice for choice in self.choices if str(choice) == text), text)
        problem = self._one_problem(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value


def _is_choice(value: Any, choices: tuple) -> bool:
    # True == 1 in Python: a bool is never a context width
    return any(value == choice and type(value) is type(choice) for choice in choices)


def _listed(choices: tuple | None) -> str:
    return ", ".join(map(str, choices or ()))


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def option(default: Any, doc: str, **spec: Any) -> Any:
    """A dataclass field for an option: its default and its :class:`OptionSpec`."""
    return field(default=default, metadata={"spec": OptionSpec(doc, **spec)})


def _is_settings(value: Any) -> bool:
    """Explicit settings in place of a preset name (``presets.PipelineSettings`` / ``DDM2Settings``)."""
    return not isinstance(value, str) and hasattr(value, "__dataclass_fields__")


def _is_indexed_cuda(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("cuda:") and value[5:].isdigit()


class _Options:
    """What both options records share: checking, the keyword and command-line forms, the panel names."""

    def __post_init__(self) -> None:
        for name, spec in specs(type(self)).items():
            problem = spec.problem(getattr(self, name))
            if problem is not None:
                raise InputError(f"{name}: {problem}")
        self._check_together()

    def _check_together(self) -> None:
        """Refuse values that are allowed alone but not together."""

    @classmethod
    def of(cls, options: Any = None, keywords: dict[str, Any] | None = None) -> Any:
        """``options`` (None: the defaults) with ``keywords`` (field names) replacing its values; a name that
        is not an option is a TypeError, as for any Python keyword."""
        keywords = keywords or {}
        unknown = sorted(set(keywords) - set(specs(cls)))
        if unknown:
            raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)}; options: {', '.join(specs(cls))}")
        return replace(options, **keywords) if options is not None else cls(**keywords)

    @classmethod
    def from_panel_names(cls, keywords: dict[str, Any]) -> Any:
        """The options given by their panel names (the Slicer logic's keywords: ``srdsPairs``); in a
        panel's optional whole number 0 means "the preset's"."""
        by_panel = {spec.panel: name for name, spec in specs(cls).items()}
        unknown = sorted(set(keywords) - set(by_panel))
        if unknown:
            raise TypeError(f"no option {', '.join(unknown)}; options: {', '.join(by_panel)}")
        values = {}
        for panel, value in keywords.items():
            name = by_panel[panel]
            spec = specs(cls)[name]
            values[name] = None if value == 0 and spec.panel_maximum is not None else value
        return cls(**values)

    def as_panel_names(self) -> dict[str, Any]:
        """The options by their panel names: the keywords of the Slicer logic (:meth:`from_panel_names`)."""
        return {spec.panel: getattr(self, name) for name, spec in specs(type(self)).items()}

    @classmethod
    def from_namespace(cls, arguments: argparse.Namespace) -> Any:
        """The options of a parsed command line (:func:`add_arguments`)."""
        values = {name: getattr(arguments, name) for name in specs(cls) if hasattr(arguments, name)}
        return cls(**{name: tuple(value) if specs(cls)[name].many else value for name, value in values.items()})

    def to_cli_args(self) -> list[str]:
        """The command-line words that give these options to ``diffdenoise <job>`` (defaults left out)."""
        words: list[str] = []
        all_specs = specs(type(self))
        for item in fields(self):  # type: ignore[arg-type]
            spec, value = all_specs[item.name], getattr(self, item.name)
            if value == item.default or spec.flag is None:
                continue
            if _is_settings(value):
                raise InputError(f"{item.name}: explicit settings cannot go on a command line; use a preset name")
            # --flag=value: a negative seed is not taken for a flag
            words += [spec.flag, *map(str, value)] if spec.many else [f"{spec.flag}={value}"]
        return words


@functools.cache  # read on every check and conversion; a record's fields never change
def specs(options: type) -> dict[str, OptionSpec]:
    """Each option's spec by field name, with the flag and panel name filled in (not to be modified)."""
    found = {}
    for item in fields(options):
        spec = item.metadata["spec"]
        flag = "--" + item.name.replace("_", "-") if spec.flag == "" else spec.flag
        found[item.name] = replace(spec, flag=flag, panel=spec.panel or _camel(item.name))
    return found


def _in_preset(what: str) -> str:
    return f"{what} (default: the preset's)"


@dataclass(frozen=True)
class DenoiseOptions(_Options):
    """How ``denoise`` runs on a 2D image or 3D volume (:func:`.denoise.denoise`)."""

    method: str = option("diffdenoise", "diffdenoise: BSN -> diffusion -> SRDS -> distilled NAFNet (default); "
                         "diffusion: the SRDS output; bsn: the blind-spot network alone", choices=METHODS)
    noise: str = option("auto", "noise type (auto: measured); gaussian, poisson, gamma (speckle) or rician name "
                        "the family of pixel-independent noise, which sets how training pairs are split (and, for "
                        "rician, takes the magnitude bias out of the output)", choices=NOISE_CHOICES,
                        on_panel=True)
    # in Python also explicit presets.PipelineSettings
    preset: Any = option("quick", "training budget: quick, standard or full (docs/usage.md, Presets)", choices=PRESETS,
                         accepts=_is_settings, on_panel=True)
    device: str = option("auto", "compute device: auto (CUDA > MPS > CPU), cpu, cuda (or cuda:N) or mps",
                         choices=DEVICE_CHOICES, accepts=_is_indexed_cuda, on_panel=True)
    seed: int = option(0, "random seed of training and sampling; the same seed and input give the same result "
                       "on one device", minimum=SEED_RANGE[0], maximum=SEED_RANGE[1])
    steps: int | None = option(None, _in_preset("training steps of every stage"), minimum=1)
    srds_pairs: int | None = option(None, _in_preset("antithetic SRDS pairs averaged per slice"), minimum=1,
                                    on_panel=True, panel_maximum=16)
    ddim_steps: int | None = option(None, _in_preset("DDIM steps per SRDS trajectory"), minimum=1, on_panel=True,
                                    panel_maximum=1000)
    distill_slices: int | None = option(None, _in_preset("SRDS-sample at most this many evenly spaced slices to "
                                                         "train the NAFNet"), minimum=1)
    context: int | str = option("auto", "neighbouring slices per side every network reads (auto: chosen from the "
                                "volume; 0: each slice alone, as for 2D images)", choices=CONTEXT_CHOICES)
    wiener_depth: int | None = option(None, _in_preset("slices the BSN's Wiener patches span where the networks "
                                                       "read a volume's neighbours (1: in-plane patches)"), minimum=1)
    outputs: tuple[str, ...] = option((), "also give these float32 outputs: residual (input - output), "
                                      "uncertainty (SRDS pair disagreement), bsn (BSN output), srds (SRDS output)",
                                      choices=EXTRA_OUTPUTS, many=True, flag="--extra", panel="extraOutputs")

    def _check_together(self) -> None:
        if {"uncertainty", "srds"} & set(self.outputs) and self.method == "bsn":
            raise InputError("the uncertainty map and SRDS output come from SRDS: use method diffusion or diffdenoise")


@dataclass(frozen=True)
class DWIOptions(_Options):
    """How ``ddm2`` runs on a 4D diffusion MRI series (:func:`.denoise_dwi.denoise_dwi`)."""

    method: str = option("ddm2", "ddm2: Stages I-III (default); stage1: the slice-from-other-volumes denoiser "
                         "alone", choices=DWI_METHODS)
    # in Python also explicit pipelines.ddm2.DDM2Settings
    preset: Any = option("quick", "training budget: quick, standard or full (docs/usage.md, Presets)", choices=PRESETS,
                         accepts=_is_settings)
    device: str = option("auto", "compute device: auto (CUDA > MPS > CPU), cpu, cuda (or cuda:N) or mps",
                         choices=DEVICE_CHOICES, accepts=_is_indexed_cuda)
    seed: int = option(0, "random seed of training and sampling", minimum=SEED_RANGE[0], maximum=SEED_RANGE[1])
    steps: int | None = option(None, _in_preset("training steps of both stages"), minimum=1)
    neighbours: int | None = option(None, "volumes per Stage I input (default: the smallest repeated shell's other "
                                          "volumes, 2 to 8)", minimum=1)
    sampler: str | None = option(None, _in_preset("accelerated: DDIM over a few steps; full: every step of the "
                                                  "chain"), choices=(None, *SAMPLERS))
    sampler_steps: int | None = option(None, _in_preset("steps of the accelerated sampler"), minimum=1)


def add_arguments(parser: argparse.ArgumentParser, options: type, only: tuple[str, ...] | None = None) -> None:
    """Add a CLI flag for each option of ``options`` (those named in ``only``, if given), each value checked
    as the library checks it; :meth:`_Options.from_namespace` reads them back."""
    defaults = options()
    for name, spec in specs(options).items():
        if spec.flag is None or (only is not None and name not in only):
            continue
        choices = tuple(choice for choice in spec.choices or () if choice is not None)
        metavar = "{" + ",".join(map(str, choices)) + "}" if choices else None
        parser.add_argument(spec.flag, dest=name, default=getattr(defaults, name), type=spec.parse,
                            nargs="+" if spec.many else None, metavar=metavar, help=spec.doc)


def panel_parameters(options: type, choice: Callable[[tuple], Any],
                     within_range: Callable[[int, int], Any]) -> dict[str, tuple[Any, Any]]:
    """The Slicer parameter-node fields of the panel's options: panel name -> (annotation, default), with
    Slicer's ``Choice`` and ``WithinRange`` annotations (a spin box's 0 is "the preset's")."""
    from typing import Annotated

    defaults = options()
    parameters = {}
    for name, spec in specs(options).items():
        if not spec.on_panel:
            continue
        if spec.panel_maximum is not None:
            parameters[spec.panel] = (Annotated[int, within_range(0, spec.panel_maximum)], 0)
        else:
            parameters[spec.panel] = (Annotated[str, choice(spec.choices)], getattr(defaults, name))
    return parameters
