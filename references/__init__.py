"""Reference implementations for tests, benchmarks and maintainer tools.

Written from the papers and the authors' code (NumPy and plain PyTorch), independent of
ffzoo. Not part of the wheel: only a checkout has them.
"""
