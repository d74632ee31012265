"""Fused, chunked and Pallas implementations of entreg functionals (installed as `entreg.kernels`)."""
