"""The benchmark suites, run as ``ppinfer bench NAME`` from a source checkout (imported
as ``benchmarks``; not part of any wheel)."""

__all__: list[str] = []
