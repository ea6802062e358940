"""Method pipelines: each trains its networks on the noisy slices themselves and returns a bundle."""
