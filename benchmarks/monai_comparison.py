"""Why DiffDenoise has its own diffusion network and DDIM step instead of MONAI's (measured, not assumed).

    pip install monai einops && python benchmarks/monai_comparison.py

1. Speed: MONAI ``DiffusionModelUNet`` (2D, [x_t, c] in, noise out) against the NAFNet-based network of our
   presets, as seconds per training step (batch 8 x 64 x 64) and per SRDS network call (a pair of
   256 x 256 slices), on this machine's threads.
2. Schedule consistency: MONAI ``DDIMScheduler.step`` moves to ``t - T // n`` while ``set_timesteps`` visits
   ``linspace(T - 1, 0, n)``; the table lists how far apart they are (ours moves to the next visited step).
"""

from __future__ import annotations

import time

import torch

try:
    from monai.networks.nets import DiffusionModelUNet
    from monai.networks.schedulers import DDIMScheduler
except ImportError:
    raise SystemExit("skipped: monai (and einops) are not installed: pip install monai einops") from None

from DiffDenoiseLib.diffusion import NoiseSchedule, ddim_timesteps
from DiffDenoiseLib.models import NAFNet, NAFNetConfig


def timings(network: torch.nn.Module) -> tuple[int, float, float]:
    optimizer = torch.optim.AdamW(network.parameters(), 1e-4)
    x, t = torch.randn(8, 2, 64, 64), torch.randint(0, 1000, (8,))
    for step in range(6):
        if step == 1:
            started = time.perf_counter()
        loss = network(x, t).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train = (time.perf_counter() - started) / 5
    network.eval()
    with torch.no_grad():
        x, t = torch.randn(2, 2, 256, 256), torch.full((2,), 500)
        network(x, t)
        started = time.perf_counter()
        for _ in range(3):
            network(x, t)
    parameters = sum(p.numel() for p in network.parameters())
    return parameters, train, (time.perf_counter() - started) / 3


def main() -> None:
    networks = {
        "MONAI DiffusionModelUNet (16,32,64), attention at the lowest level": DiffusionModelUNet(
            spatial_dims=2, in_channels=2, out_channels=1, channels=(16, 32, 64), attention_levels=(False, False, True),
            num_res_blocks=1, norm_num_groups=16, num_head_channels=64),
        "MONAI DiffusionModelUNet (32,64,128), no attention": DiffusionModelUNet(
            spatial_dims=2, in_channels=2, out_channels=1, channels=(32, 64, 128),
            attention_levels=(False, False, False), num_res_blocks=1, norm_num_groups=16),
    }
    for width in (16, 32):
        networks[f"DiffDenoise NAFNet width {width} (1,1,1)/1 (preset {'quick' if width == 16 else 'standard'})"] = \
            NAFNet(NAFNetConfig(width=width, in_channels=2, residual="none", time_conditioned=True))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| network | parameters | s / train step (8x64x64) | s / SRDS call (2x256x256) |\n|---|---|---|---|")
    for name, network in networks.items():
        parameters, train, infer = timings(network)
        print(f"| {name} | {parameters / 1e6:.2f} M | {train:.3f} | {infer:.3f} |")

    print("\n| DDIM steps | MONAI visits | MONAI steps to | ours visits (= steps to) |\n|---|---|---|---|")
    for steps in (7, 10, 30):
        scheduler = DDIMScheduler(1000, clip_sample=False)
        scheduler.set_timesteps(steps)
        visited = scheduler.timesteps.tolist()
        moves_to = [t - 1000 // steps for t in visited]
        ours = ddim_timesteps(NoiseSchedule(steps=1000), steps)
        print(f"| {steps} | {visited[:4]}... | {moves_to[:4]}... | {ours[:4]}... |")


if __name__ == "__main__":
    main()
