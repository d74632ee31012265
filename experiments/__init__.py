"""Reference experiments and benchmarks: ``python -m experiments.<name> [--quick] [--out DIR]``."""
