"""Bounded-memory inference: tiles that stitch exactly, and the out-of-memory fallback."""

import numpy as np
import pytest
import torch
from torch import nn

from DiffDenoiseLib.diffusion import NoiseSchedule
from DiffDenoiseLib.errors import DiffDenoiseError
from DiffDenoiseLib.pipelines.diffdenoise import SamplingSettings, sample_srds
from DiffDenoiseLib.runtime.inference import MemoryFallbackWarning, MemoryPlan, predict_slices, tile_spans, tiled

CPU = torch.device("cpu")


class LocalNetwork(nn.Module):
    """Five 3x3 convolutions: each output pixel sees 5 pixels around it, well inside the tile margin. With
    ``pixel_budget`` it raises the error a GPU raises when a call holds more pixels than fit."""

    min_size = 8

    def __init__(self, in_channels: int = 1, pixel_budget: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(*[nn.Conv2d(in_channels if i == 0 else 4, 4 if i < 4 else 1, 3, padding=1)
                                      for i in range(5)])
        self.pixel_budget = pixel_budget
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        if self.pixel_budget is not None and x.numel() // x.shape[1] > self.pixel_budget:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.layers(x)


@pytest.mark.parametrize("size,tile", [(100, 512), (512, 512), (513, 512), (1000, 256), (2048, 512), (300, 128)])
def test_tiles_cover_the_axis_once_with_seams_inside_the_margins(size, tile):
    spans = tile_spans(size, tile, margin=32)
    kept = np.zeros(size, int)
    for start, stop, keep_from, keep_to in spans:
        assert 0 <= start <= keep_from < keep_to <= stop <= size and stop - start == min(tile, size)
        assert keep_from == 0 or keep_from - start >= 32
        assert keep_to == size or stop - keep_to >= 32
        kept[keep_from:keep_to] += 1
    assert (kept == 1).all()


def test_tiled_output_equals_the_whole_slice_for_a_local_network():
    network = LocalNetwork().eval()
    x = torch.rand(2, 1, 300, 260)
    with torch.no_grad():
        whole = network(x)
        parts = tiled(network, x, tile=128, margin=32)
    assert max(call[-1] for call in network.calls) == 260 and network.calls[-1][-2:] == (128, 128)
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=1e-5)


def test_out_of_memory_falls_back_to_one_slice_then_smaller_tiles():
    slices = np.random.default_rng(0).random((3, 1, 300, 300), dtype=np.float32)
    expected = predict_slices(LocalNetwork(), slices, CPU, batch_size=2, mixed_precision=False)
    network = LocalNetwork(pixel_budget=200 * 200)
    with pytest.warns(MemoryFallbackWarning) as caught:
        got = predict_slices(network, slices, CPU, batch_size=2, mixed_precision=False, tile=512)
    assert [str(w.message) for w in caught] == ["out of memory; continuing with one slice per batch",
                                               "out of memory; continuing with tiles of 256 px",
                                               "out of memory; continuing with tiles of 128 px"]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_fallback_order_ends_on_the_cpu_then_a_clear_error():
    plan = MemoryPlan(torch.device("cuda"), batch_size=4, tile=256, min_tile=128)
    error = torch.OutOfMemoryError("CUDA out of memory")
    steps = []
    with pytest.warns(MemoryFallbackWarning):
        for _ in range(3):
            plan.shrink(error)
            steps.append((plan.batch_size, plan.tile, plan.device.type))
    assert steps == [(1, 256, "cuda"), (1, 128, "cuda"), (1, 128, "cpu")]
    with pytest.raises(DiffDenoiseError, match="out of memory even with one slice in 128-px tiles"):
        plan.shrink(error)


def test_srds_recovers_from_out_of_memory_with_the_same_result():
    condition = np.random.default_rng(1).random((2, 1, 200, 200), dtype=np.float32)
    schedule, settings = NoiseSchedule("linear", 50), SamplingSettings(steps=3, pairs=1, batch_slices=2)
    expected = sample_srds(LocalNetwork(in_channels=2), condition, schedule, settings, CPU, seed=3)
    with pytest.warns(MemoryFallbackWarning):
        got = sample_srds(LocalNetwork(in_channels=2, pixel_budget=2 * 150 * 150), condition, schedule, settings,
                          CPU, seed=3)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_non_memory_errors_are_not_swallowed():
    class Broken(LocalNetwork):
        def forward(self, x, timesteps=None):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        predict_slices(Broken(), np.zeros((1, 1, 64, 64), np.float32), CPU)
