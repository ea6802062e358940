"""How networks run: the one training loop (``training``), slice-batched tiled inference (``inference``), the
device and its precision (``devices``), torchrun process groups (``distributed``), and progress and cancel
(``progress``)."""
