"""DiffDenoise benchmarks against peers on the real images of ``../shared/data``: ``python -m benchmarks run``."""
