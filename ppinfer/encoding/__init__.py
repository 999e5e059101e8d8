"""Integers for the protocol: fixed point, slot packing, wire bytes, the exact numerics
and the mask distributions. The lowest layer: it imports nothing else of ppinfer but
:mod:`ppinfer.errors`."""

__all__: list[str] = []
