"""The model server A and the key server B (imported as ``ppinfer.servers``)."""

__all__: list[str] = []
