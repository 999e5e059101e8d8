from ppinfer.v1 import tensors_pb2 as _tensors_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublicKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublicKeys(_message.Message):
    __slots__ = ("paillier", "x25519", "protocol")
    PAILLIER_FIELD_NUMBER: _ClassVar[int]
    X25519_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    paillier: _tensors_pb2.PaillierPublicKey
    x25519: bytes
    protocol: int
    def __init__(self, paillier: _Optional[_Union[_tensors_pb2.PaillierPublicKey, _Mapping]] = ..., x25519: _Optional[bytes] = ..., protocol: _Optional[int] = ...) -> None: ...

class KeyRequest(_message.Message):
    __slots__ = ("call_id", "derive", "activation", "seal", "end", "entry", "share", "bind")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    DERIVE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    SEAL_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    BIND_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    derive: DeriveSession
    activation: ActivationBatch
    seal: SealRequest
    end: EndSession
    entry: NewEntry
    share: ShareRequest
    bind: BindEntry
    def __init__(self, call_id: _Optional[int] = ..., derive: _Optional[_Union[DeriveSession, _Mapping]] = ..., activation: _Optional[_Union[ActivationBatch, _Mapping]] = ..., seal: _Optional[_Union[SealRequest, _Mapping]] = ..., end: _Optional[_Union[EndSession, _Mapping]] = ..., entry: _Optional[_Union[NewEntry, _Mapping]] = ..., share: _Optional[_Union[ShareRequest, _Mapping]] = ..., bind: _Optional[_Union[BindEntry, _Mapping]] = ...) -> None: ...

class DeriveSession(_message.Message):
    __slots__ = ("session_id", "client_x25519", "key_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_X25519_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    client_x25519: bytes
    key_id: str
    def __init__(self, session_id: _Optional[str] = ..., client_x25519: _Optional[bytes] = ..., key_id: _Optional[str] = ...) -> None: ...

class NewEntry(_message.Message):
    __slots__ = ("count", "mask_bits", "stages", "key_id")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MASK_BITS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    count: int
    mask_bits: int
    stages: _containers.RepeatedCompositeFieldContainer[MaskSpec]
    key_id: str
    def __init__(self, count: _Optional[int] = ..., mask_bits: _Optional[int] = ..., stages: _Optional[_Iterable[_Union[MaskSpec, _Mapping]]] = ..., key_id: _Optional[str] = ...) -> None: ...

class ShareRequest(_message.Message):
    __slots__ = ("entry_id", "part", "layout", "value_count", "chunk")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    VALUE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    part: int
    layout: _tensors_pb2.SlotLayout
    value_count: int
    chunk: _tensors_pb2.CiphertextChunk
    def __init__(self, entry_id: _Optional[str] = ..., part: _Optional[int] = ..., layout: _Optional[_Union[_tensors_pb2.SlotLayout, _Mapping]] = ..., value_count: _Optional[int] = ..., chunk: _Optional[_Union[_tensors_pb2.CiphertextChunk, _Mapping]] = ...) -> None: ...

class BindEntry(_message.Message):
    __slots__ = ("session_id", "entry_id", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    entry_id: str
    request_id: int
    def __init__(self, session_id: _Optional[str] = ..., entry_id: _Optional[str] = ..., request_id: _Optional[int] = ...) -> None: ...

class MaskSpec(_message.Message):
    __slots__ = ("count", "bits")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    count: int
    bits: int
    def __init__(self, count: _Optional[int] = ..., bits: _Optional[int] = ...) -> None: ...

class Function(_message.Message):
    __slots__ = ("name", "parameters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    parameters: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., parameters: _Optional[_Iterable[float]] = ...) -> None: ...

class ActivationBatch(_message.Message):
    __slots__ = ("session_id", "request_id", "layout", "value_count", "in_frac_bits", "out_frac_bits", "chunk", "functions", "window", "after", "stage_index", "values")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    VALUE_COUNT_FIELD_NUMBER: _ClassVar[int]
    IN_FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    OUT_FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    STAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    request_id: int
    layout: _tensors_pb2.SlotLayout
    value_count: int
    in_frac_bits: int
    out_frac_bits: int
    chunk: _tensors_pb2.CiphertextChunk
    functions: _containers.RepeatedCompositeFieldContainer[Function]
    window: int
    after: _containers.RepeatedCompositeFieldContainer[Function]
    stage_index: int
    values: _tensors_pb2.BigIntVector
    def __init__(self, session_id: _Optional[str] = ..., request_id: _Optional[int] = ..., layout: _Optional[_Union[_tensors_pb2.SlotLayout, _Mapping]] = ..., value_count: _Optional[int] = ..., in_frac_bits: _Optional[int] = ..., out_frac_bits: _Optional[int] = ..., chunk: _Optional[_Union[_tensors_pb2.CiphertextChunk, _Mapping]] = ..., functions: _Optional[_Iterable[_Union[Function, _Mapping]]] = ..., window: _Optional[int] = ..., after: _Optional[_Iterable[_Union[Function, _Mapping]]] = ..., stage_index: _Optional[int] = ..., values: _Optional[_Union[_tensors_pb2.BigIntVector, _Mapping]] = ...) -> None: ...

class SealRequest(_message.Message):
    __slots__ = ("session_id", "request_id", "layout", "value_count", "value_bytes", "values", "bind_next", "shift", "modulus_bits")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    VALUE_COUNT_FIELD_NUMBER: _ClassVar[int]
    VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    BIND_NEXT_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    MODULUS_BITS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    request_id: int
    layout: _tensors_pb2.SlotLayout
    value_count: int
    value_bytes: int
    values: _tensors_pb2.BigIntVector
    bind_next: BindEntry
    shift: int
    modulus_bits: int
    def __init__(self, session_id: _Optional[str] = ..., request_id: _Optional[int] = ..., layout: _Optional[_Union[_tensors_pb2.SlotLayout, _Mapping]] = ..., value_count: _Optional[int] = ..., value_bytes: _Optional[int] = ..., values: _Optional[_Union[_tensors_pb2.BigIntVector, _Mapping]] = ..., bind_next: _Optional[_Union[BindEntry, _Mapping]] = ..., shift: _Optional[int] = ..., modulus_bits: _Optional[int] = ...) -> None: ...

class EndSession(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class KeyResponse(_message.Message):
    __slots__ = ("call_id", "derived", "ciphertexts", "sealed", "error", "values", "stored", "entry_id", "ticket")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    DERIVED_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    derived: SessionDerived
    ciphertexts: _tensors_pb2.CiphertextChunk
    sealed: bytes
    error: Error
    values: _tensors_pb2.BigIntVector
    stored: bool
    entry_id: str
    ticket: bytes
    def __init__(self, call_id: _Optional[int] = ..., derived: _Optional[_Union[SessionDerived, _Mapping]] = ..., ciphertexts: _Optional[_Union[_tensors_pb2.CiphertextChunk, _Mapping]] = ..., sealed: _Optional[bytes] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., values: _Optional[_Union[_tensors_pb2.BigIntVector, _Mapping]] = ..., stored: _Optional[bool] = ..., entry_id: _Optional[str] = ..., ticket: _Optional[bytes] = ...) -> None: ...

class SessionDerived(_message.Message):
    __slots__ = ("session_id", "salt", "instance")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    salt: bytes
    instance: str
    def __init__(self, session_id: _Optional[str] = ..., salt: _Optional[bytes] = ..., instance: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
