"""Fused, chunked and Pallas implementations of entreg functionals (as `entreg.kernels`)."""
