"""Engines execute specs: ``embedded`` (DuckDB + numba kernels) and ``spark`` (pyspark)."""

from funnelscope.engines.base import Engine

__all__ = ["Engine"]
