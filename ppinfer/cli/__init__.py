"""The ``ppinfer`` command line (entry point :func:`ppinfer.cli.main.main`)."""

__all__: list[str] = []
