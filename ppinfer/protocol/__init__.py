"""The three parties as objects that do no I/O: the client session, model server A's
evaluator and key server B's core, with the session keys and the revision gate. No
grpc and no protobuf here; :mod:`ppinfer.rpc` carries their values over the network."""

__all__: list[str] = []
