"""What a model bundle records about its training, as typed records, and their JSON form in the bundle file.

The JSON form is that of bundle format 2 (:data:`.bundle.FORMAT_VERSION`): one section per stage beside the
networks' specs. :func:`record_of` reads it, with the defaults of bundles written before a section existed,
and refuses settings of the wrong type or out of range with :class:`.errors.BundleError` (a bundle made by
hand, or edited and rehashed, would otherwise fail deep inside a run). ``to_json`` writes it back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from .context import MAX_HALF_WIDTH, SliceContext, context_channels
from .diffusion import PREDICTIONS, NoiseSchedule
from .errors import BundleError
from .pipelines.diffdenoise import BUNDLE_DEFAULT_PREDICTION, CONDITIONINGS, SamplingSettings, condition_channels

# the network `apply` runs for a bundle of each method (ddm2 and stage1: diffusion MRI bundles)
INFERENCE_NETWORK = {"diffdenoise": "nafnet", "diffusion": "diffusion", "bsn": "bsn", "ddm2": "diffusion",
                     "stage1": "stage1"}
DDM2_SAMPLERS = ("accelerated", "full")
# how a DDM2 bundle chose Stage I neighbours in a weighted shell (bundles from before the choice: acquisition)
NEIGHBOUR_ORDERS = ("acquisition", "direction")


def is_int(value: object) -> bool:
    """A JSON whole number (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class MetadataCheck:
    """Checks of one bundle's metadata, each refusing it with :class:`BundleError` naming the file ``name``."""

    name: str

    def need(self, condition: bool, what: str) -> None:
        if not condition:
            raise BundleError(f"{self.name}: {what}; the bundle was edited or written by another tool: re-save it")

    def builds(self, settings_class: type, values: object, where: str) -> object:
        """``settings_class(**values)``, or the bundle refused."""
        self.need(isinstance(values, dict), f"{where} settings must be a mapping, got {values!r}")
        try:
            return settings_class(**values)
        except (TypeError, ValueError) as error:
            self.need(False, f"{where} settings are invalid ({error})")

    def positive_ints(self, section: dict, keys: tuple[str, ...], where: str) -> None:
        for key in keys:
            self.need(is_int(section.get(key)) and section[key] >= 1, f"{where} {key} must be a whole number >= 1, "
                      f"got {section.get(key)!r}")


@dataclass(frozen=True)
class NoiseRecord:
    """The noise of the training image: the ``noise`` option, the kind the run used (``iid`` or
    ``correlated``), the analysis (:class:`.noise.analysis.NoiseAnalysis` fields) and the fitted model's description."""

    requested: str = "auto"
    used: str = "iid"
    analysis: dict = field(default_factory=dict)
    model: dict | None = None

    def to_json(self) -> dict:
        return {"requested": self.requested, "used": self.used, **self.analysis,
                **({"model": self.model} if self.model is not None else {})}

    @classmethod
    def from_json(cls, section: dict) -> NoiseRecord:
        rest = {k: v for k, v in section.items() if k not in ("requested", "used", "model")}
        return cls(section.get("requested", "auto"), section.get("used", "iid"), rest, section.get("model"))


@dataclass(frozen=True)
class BsnRecord:
    """The BSN stage: whether its output is combined with the noisy pixel, and its blend with its Wiener
    filtering (the weight fitted on the training image; None: no blend) in patches ``wiener_depth`` slices
    deep. Bundles before these settings: the BSN output alone."""

    posterior: bool = False
    wiener_weight: float | None = None
    wiener_depth: int = 1


@dataclass(frozen=True)
class DiffusionRecord:
    """The diffusion stage and its sampling: the schedule, what the network is conditioned on and predicts,
    what it generates (deviations from the BSN output, :data:`.pipelines.diffdenoise.GENERATES`; None: an older
    bundle generating whole slices), the noise normalisation around the BSN output, and SRDS's settings and
    seed."""

    schedule: NoiseSchedule
    conditioning: str
    sampling: SamplingSettings
    seed: int = 0
    prediction: str = BUNDLE_DEFAULT_PREDICTION
    generates: str | None = None
    noise_normalisation: dict | None = None

    def to_json(self) -> dict:
        return {"diffusion": {"schedule": asdict(self.schedule), "prediction": self.prediction,
                              "conditioning": self.conditioning, "generates": self.generates,
                              "noise_normalisation": self.noise_normalisation},
                "sampling": asdict(self.sampling) | {"seed": self.seed}}


@dataclass(frozen=True)
class ScalarRecord:
    """A bundle of a method for 2D images and 3D volumes (``bsn``, ``diffusion``, ``diffdenoise``): how images
    are normalised (``training_range``: the training image's robust range) and sliced, the through-plane
    context, the noise, each stage's settings, the NAFNet's inputs (``from_bsn``: it reads the BSN estimate;
    None: no NAFNet), the weight of the output's blend with the BSN estimate (None: none) and the training
    records."""

    preset: str
    normalization: dict
    noise: NoiseRecord = field(default_factory=NoiseRecord)
    slice_axis: int = 0
    context: SliceContext = field(default_factory=SliceContext)
    training: dict = field(default_factory=dict)
    bsn: BsnRecord | None = None
    diffusion: DiffusionRecord | None = None
    from_bsn: bool | None = None
    output_blend_weight: float | None = None

    def to_json(self) -> dict:
        return {
            "normalization": self.normalization, "noise": self.noise.to_json(), "preset": self.preset,
            "slice_axis": self.slice_axis, "context": asdict(self.context), "training": self.training,
            **({"bsn": asdict(self.bsn)} if self.bsn is not None else {}),
            **(self.diffusion.to_json() if self.diffusion is not None else {}),
            **({"distillation": {"from_bsn": self.from_bsn}} if self.from_bsn is not None else {}),
            **({"output_blend": {"weight": self.output_blend_weight}} if self.output_blend_weight is not None
               else {}),
        }


@dataclass(frozen=True)
class DDM2Record:
    """A DDM2 (or Stage I) bundle for 4D diffusion MRI: the Stage I neighbour volumes (how many, and whether a
    weighted volume's are the nearest in gradient direction or in acquisition order), the schedule, the sampler
    and its seed, and how the series is scaled; ``shells`` are the training series' b-values per shell."""

    preset: str
    neighbours: int
    schedule: NoiseSchedule
    sampler: str
    sampler_steps: int
    seed: int
    shell_tolerance: float
    volume_scaling: str
    prediction: str = "x0"
    shells: tuple[float, ...] = ()
    training: dict = field(default_factory=dict)
    neighbour_order: str = "acquisition"

    def to_json(self) -> dict:
        ddm2 = {"neighbours": self.neighbours, "neighbour_order": self.neighbour_order,
                "schedule": asdict(self.schedule), "sampler": self.sampler, "sampler_steps": self.sampler_steps,
                "seed": self.seed, "shell_tolerance": self.shell_tolerance, "volume_scaling": self.volume_scaling,
                "prediction": self.prediction}
        return {"modality": "dwi", "preset": self.preset, "ddm2": ddm2, "shells": list(self.shells),
                "training": self.training}

    def with_sampler(self, sampler: str | None, sampler_steps: int | None) -> DDM2Record:
        """This record with the sampler and its step count replaced where given."""
        return replace(self, **{k: v for k, v in (("sampler", sampler), ("sampler_steps", sampler_steps))
                                if v is not None})


def record_of(metadata: dict, name: str = "bundle") -> ScalarRecord | DDM2Record:
    """The typed record of a bundle's JSON metadata (networks' specs included), checked: the method, its
    networks and what each stage's settings need of them."""
    check = MetadataCheck(name)
    method, networks = metadata.get("method"), metadata.get("networks")
    check.need(isinstance(method, str) and method in INFERENCE_NETWORK,
               f"unknown method {method!r} (known: {', '.join(INFERENCE_NETWORK)})")
    check.need(isinstance(networks, dict) and bool(networks), "'networks' must be a non-empty mapping of network "
               "specs")
    for network_name, spec in networks.items():
        check.need(isinstance(spec, dict) and isinstance(spec.get("architecture"), str)
                   and isinstance(spec.get("config"), dict), f"network {network_name!r} needs an architecture name "
                   "and a config mapping")
    inference = metadata.get("inference_network")
    check.need(inference == INFERENCE_NETWORK[method] and inference in networks,
               f"a {method} bundle runs network {INFERENCE_NETWORK[method]!r}, but inference_network is "
               f"{inference!r} (networks: {', '.join(networks)})")
    if metadata.get("modality") == "dwi":
        return _ddm2_record(check, metadata)
    record = _scalar_record(check, metadata)
    if inference == "diffusion" or "diffusion" in metadata:  # a diffdenoise bundle records it, without the network
        record = replace(record, diffusion=_diffusion_record(check, metadata, record.context.half_width,
                                                             inference == "diffusion"))
    return record


def _ddm2_record(check: MetadataCheck, metadata: dict) -> DDM2Record:
    ddm2 = metadata.get("ddm2")
    check.need(isinstance(ddm2, dict) and isinstance(ddm2.get("schedule"), dict), "'ddm2' settings are missing")
    check.positive_ints(ddm2, ("neighbours", "sampler_steps"), "ddm2")
    check.need(ddm2.get("sampler") in DDM2_SAMPLERS, f"unknown ddm2 sampler {ddm2.get('sampler')!r}")
    check.need(is_int(ddm2.get("seed")), "ddm2 seed must be a whole number")
    check.need(ddm2.get("neighbour_order", "acquisition") in NEIGHBOUR_ORDERS,
               f"unknown ddm2 neighbour order {ddm2.get('neighbour_order')!r}")
    check.need("stage1" in metadata["networks"], "a DDM2 bundle needs its 'stage1' network")
    schedule = check.builds(NoiseSchedule, ddm2["schedule"], "ddm2 schedule")
    return DDM2Record(str(metadata.get("preset", "custom")), ddm2["neighbours"], schedule, ddm2["sampler"],
                      ddm2["sampler_steps"], ddm2["seed"], ddm2.get("shell_tolerance", 0.0),
                      ddm2.get("volume_scaling", ""), ddm2.get("prediction", "x0"),
                      tuple(metadata.get("shells", ())), metadata.get("training", {}),
                      ddm2.get("neighbour_order", "acquisition"))


def _scalar_record(check: MetadataCheck, metadata: dict) -> ScalarRecord:
    """A scalar bundle's slice axis, context (matching what its networks read), stages and normalisation."""
    networks = metadata["networks"]
    axis = metadata.get("slice_axis", 0)
    check.need(is_int(axis) and axis in (0, 1, 2), f"slice_axis must be 0, 1 or 2, got {axis!r}")
    context = metadata.get("context", {"half_width": 0, "blind": False})
    check.need(isinstance(context, dict) and is_int(context.get("half_width"))
               and 0 <= context["half_width"] <= MAX_HALF_WIDTH and isinstance(context.get("blind"), bool),
               f"'context' needs a half_width from 0 to {MAX_HALF_WIDTH} and a blind flag, got {context!r}")
    half_width = context["half_width"]
    bsn_reads = networks.get("bsn", {}).get("config", {}).get("context_slices", 0)
    check.need(bsn_reads == half_width, f"the BSN reads {bsn_reads!r} neighbouring slices, the bundle's context is "
               f"{half_width}")
    distillation = metadata.get("distillation", {"from_bsn": False})
    check.need(isinstance(distillation, dict) and isinstance(distillation.get("from_bsn"), bool),
               f"'distillation' needs a from_bsn flag, got {distillation!r}")
    check.need(not distillation["from_bsn"] or "bsn" in networks, "a NAFNet distilled from the BSN output needs "
               "the 'bsn' network")
    expected = distillation["from_bsn"] + context_channels(half_width)
    nafnet_reads = networks.get("nafnet", {}).get("config", {}).get("in_channels", expected)
    check.need(nafnet_reads == expected, f"the NAFNet reads {nafnet_reads!r} channels, its inputs (context, BSN "
               f"output) are {expected}")
    normalization = metadata.get("normalization")
    check.need(isinstance(normalization, dict) and all(isinstance(v, int | float) and math.isfinite(v) for v in
                                                       normalization.get("training_range", [0.0])),
               "'normalization' must be a mapping with a finite training_range")
    noise = metadata.get("noise", {})
    check.need(isinstance(noise, dict), f"'noise' must be a mapping, got {noise!r}")
    blend = metadata.get("output_blend", {})
    check.need(isinstance(blend, dict), f"'output_blend' must be a mapping, got {blend!r}")
    return ScalarRecord(str(metadata.get("preset", "custom")), normalization, NoiseRecord.from_json(noise), axis,
                        SliceContext(half_width, context["blind"], context.get("reason", "")),
                        metadata.get("training", {}), _bsn_record(check, metadata),
                        from_bsn=metadata["distillation"]["from_bsn"] if "distillation" in metadata else None,
                        output_blend_weight=blend.get("weight"))


def _bsn_record(check: MetadataCheck, metadata: dict) -> BsnRecord | None:
    if "bsn" not in metadata:
        return None
    stage = check.builds(BsnRecord, metadata["bsn"], "bsn")
    check.need(is_int(stage.wiener_depth) and stage.wiener_depth >= 1,
               f"bsn wiener_depth must be a whole number >= 1, got {stage.wiener_depth!r}")
    check.need(stage.wiener_weight is None or (isinstance(stage.wiener_weight, int | float)
                                               and 0 <= stage.wiener_weight <= 1),
               f"bsn wiener_weight must be from 0 to 1, got {stage.wiener_weight!r}")
    return stage


def _diffusion_record(check: MetadataCheck, metadata: dict, half_width: int, runs_it: bool) -> DiffusionRecord:
    """The diffusion stage's schedule, conditioning and sampling settings; for a bundle that ``runs_it`` (a
    diffusion bundle), also the networks they need."""
    diffusion, sampling, networks = metadata.get("diffusion"), metadata.get("sampling"), metadata["networks"]
    check.need(isinstance(diffusion, dict) and isinstance(diffusion.get("schedule"), dict)
               and isinstance(diffusion.get("conditioning"), str), "'diffusion' settings (schedule, conditioning) "
               "are missing")
    check.need(isinstance(sampling, dict), "'sampling' settings are missing")
    check.positive_ints(sampling, ("pairs", "steps"), "sampling")
    check.need(is_int(sampling.get("seed", 0)), "sampling seed must be a whole number")
    schedule = check.builds(NoiseSchedule, diffusion["schedule"], "diffusion schedule")
    settings = check.builds(SamplingSettings, {k: v for k, v in sampling.items() if k != "seed"}, "sampling")
    conditioning = diffusion["conditioning"]
    check.need(conditioning in CONDITIONINGS, f"unknown conditioning {conditioning!r}")
    prediction = diffusion.get("prediction", BUNDLE_DEFAULT_PREDICTION)
    check.need(prediction in PREDICTIONS, f"unknown diffusion prediction {diffusion.get('prediction')!r}")
    if runs_it:
        check.need(conditioning == "identity" or "bsn" in networks, f"conditioning {conditioning!r} needs the "
                   "'bsn' network")
        expected = 1 + condition_channels(conditioning, half_width)
        check.need(networks["diffusion"]["config"].get("in_channels") == expected,
                   f"the diffusion network must read {expected} channels for its conditioning and context")
    return DiffusionRecord(schedule, conditioning, settings, sampling.get("seed", 0), prediction,
                           diffusion.get("generates"), diffusion.get("noise_normalisation"))
