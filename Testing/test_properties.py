"""Property-based tests (hypothesis): normalisation and I/O round trips hold for any shape, type and value."""

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from DiffDenoiseLib.io import Geometry, Volume, read_provenance, read_volume, write_volume
from DiffDenoiseLib.noise.analysis import robust_range
from DiffDenoiseLib.noise.normalisation import NoiseNormaliser
from DiffDenoiseLib.preprocessing import (
    HIGH_PERCENTILE,
    LOW_PERCENTILE,
    IntensityScaling,
    from_slices,
    match_dtype,
    to_slices,
)
from DiffDenoiseLib.provenance import Provenance

INTEGER_TYPES = [np.uint8, np.int8, np.uint16, np.int16, np.int32]
shapes_3d = st.tuples(st.integers(1, 5), st.integers(2, 9), st.integers(2, 9))
finite_floats = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


def _normalisable(array: np.ndarray) -> bool:
    """Not constant, and a robust range float32 can divide by (subnormal spans are refused: test_bad_inputs)."""
    low, high = robust_range(array, LOW_PERCENTILE, HIGH_PERCENTILE)
    return high - low >= np.finfo(np.float32).tiny


@given(hnp.arrays(np.float32, shapes_3d, elements=finite_floats).filter(_normalisable))
def test_intensity_scaling_round_trips(image):
    scaling = IntensityScaling.fit(image)
    back = scaling.denormalise(scaling.normalise(image))
    span = float(image.max()) - float(image.min())
    np.testing.assert_allclose(back, image, atol=1e-5 * max(span, abs(float(image.max())), 1.0))


@given(hnp.arrays(np.float32, shapes_3d, elements=finite_floats), st.integers(0, 2))
def test_slicing_round_trips_along_any_axis(volume, axis):
    slices = to_slices(volume, axis)
    assert slices.ndim == 4 and slices.shape[1] == 1
    np.testing.assert_array_equal(from_slices(slices, volume.shape, axis), volume)


@given(st.sampled_from(INTEGER_TYPES), hnp.arrays(np.float64, st.integers(1, 50),
                                                   elements=st.floats(-1e6, 1e6, allow_nan=False)))
def test_integer_outputs_are_rounded_and_clipped_to_the_type(dtype, values):
    cast = match_dtype(values, dtype)
    info = np.iinfo(dtype)
    assert cast.dtype == dtype
    np.testing.assert_array_equal(cast, np.clip(np.rint(values), info.min, info.max))


@given(levels=hnp.arrays(np.float64, st.integers(2, 12), elements=st.floats(1e-3, 1.0)),
       noisy=hnp.arrays(np.float32, (3, 8, 8), elements=st.floats(-0.5, 1.5, width=32)),
       signal=hnp.arrays(np.float32, (3, 8, 8), elements=st.floats(-0.25, 1.25, width=32)))
def test_noise_normalisation_inverts_exactly(levels, noisy, signal):
    normaliser = NoiseNormaliser(np.linspace(0.0, 1.0, len(levels)), levels)
    back = normaliser.inverse(normaliser.forward(noisy, signal), signal)
    np.testing.assert_allclose(back, noisy, atol=1e-4 * max(1.0, float(levels.max() / levels.min())))
    rebuilt = NoiseNormaliser.from_metadata(normaliser.describe())
    np.testing.assert_array_equal(rebuilt.gain(signal), normaliser.gain(signal))


geometries = st.builds(
    lambda spacing, origin, angle: Geometry(
        spacing, origin, tuple(np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                                         [0, 0, 1]]).ravel())),
    st.tuples(*[st.floats(0.1, 5.0)] * 3), st.tuples(*[st.floats(-500, 500)] * 3), st.floats(-np.pi, np.pi))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([".nii.gz", ".nrrd", ".mha"]), st.sampled_from([np.int16, np.uint8, np.float32]),
       shapes_3d, geometries, st.data())
def test_volume_files_round_trip_values_geometry_and_provenance(suffix, dtype, shape, geometry, data):
    elements = finite_floats if dtype == np.float32 else st.integers(np.iinfo(dtype).min, np.iinfo(dtype).max)
    array = data.draw(hnp.arrays(dtype, shape, elements=elements))
    record = Provenance("bsn", "quick", data.draw(st.text("0123456789abcdef", min_size=64, max_size=64)), "bundle")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"v{suffix}"
        write_volume(path, Volume(array, geometry), provenance=record)
        back = read_volume(path)
        assert read_provenance(path) == record
    np.testing.assert_array_equal(back.array, array)
    assert back.array.dtype == array.dtype
    np.testing.assert_allclose(back.geometry.spacing, geometry.spacing, rtol=1e-5)
    np.testing.assert_allclose(back.geometry.origin, geometry.origin, atol=1e-3)
    np.testing.assert_allclose(back.geometry.direction, geometry.direction, atol=1e-5)
