"""Benchmarks, run as ``ppinfer bench NAME`` (imported as ``ppinfer.benchmarks``)."""

__all__: list[str] = []
