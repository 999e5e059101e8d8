"""The only layer that imports grpc or the generated ppinfer.v1 stubs: the message
converters, the servicers of A and B, A's link to B, the client stub and TLS."""

__all__: list[str] = []
