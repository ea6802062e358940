"""The noise of images: its analysis (``analysis``), the fitted noise model that recorruption and the blends
use (``model``, with Rician noise's moments in ``rician``), the per-pixel normalisation around the BSN output
for the diffusion stage (``normalisation``), and simulated noise for benchmarks and tests (``simulate``)."""
