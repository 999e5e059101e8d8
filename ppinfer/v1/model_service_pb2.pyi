from ppinfer.v1 import key_service_pb2 as _key_service_pb2
from ppinfer.v1 import tensors_pb2 as _tensors_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClientAided(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLIENT_AIDED_DISABLED: _ClassVar[ClientAided]
    CLIENT_AIDED_BENCHMARK_ONLY_TRUSTS_CLIENT_KEY: _ClassVar[ClientAided]
CLIENT_AIDED_DISABLED: ClientAided
CLIENT_AIDED_BENCHMARK_ONLY_TRUSTS_CLIENT_KEY: ClientAided

class ServerInfoRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "input_shape", "output_shape", "input_frac_bits", "input_value_bits", "output_frac_bits", "mask_sigma", "client_activation", "layers", "output_modulus_bits", "aided_output_frac_bits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    INPUT_VALUE_BITS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    MASK_SIGMA_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MODULUS_BITS_FIELD_NUMBER: _ClassVar[int]
    AIDED_OUTPUT_FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    output_shape: _containers.RepeatedScalarFieldContainer[int]
    input_frac_bits: int
    input_value_bits: int
    output_frac_bits: int
    mask_sigma: int
    client_activation: str
    layers: int
    output_modulus_bits: int
    aided_output_frac_bits: int
    def __init__(self, name: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., output_shape: _Optional[_Iterable[int]] = ..., input_frac_bits: _Optional[int] = ..., input_value_bits: _Optional[int] = ..., output_frac_bits: _Optional[int] = ..., mask_sigma: _Optional[int] = ..., client_activation: _Optional[str] = ..., layers: _Optional[int] = ..., output_modulus_bits: _Optional[int] = ..., aided_output_frac_bits: _Optional[int] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("model", "paillier", "key_server_x25519", "key_id", "client_aided")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAILLIER_FIELD_NUMBER: _ClassVar[int]
    KEY_SERVER_X25519_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_AIDED_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    paillier: _tensors_pb2.PaillierPublicKey
    key_server_x25519: bytes
    key_id: str
    client_aided: ClientAided
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., paillier: _Optional[_Union[_tensors_pb2.PaillierPublicKey, _Mapping]] = ..., key_server_x25519: _Optional[bytes] = ..., key_id: _Optional[str] = ..., client_aided: _Optional[_Union[ClientAided, str]] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("open", "infer", "close", "activated")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    INFER_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_FIELD_NUMBER: _ClassVar[int]
    open: OpenSession
    infer: InferRequest
    close: CloseSession
    activated: ActivationReply
    def __init__(self, open: _Optional[_Union[OpenSession, _Mapping]] = ..., infer: _Optional[_Union[InferRequest, _Mapping]] = ..., close: _Optional[_Union[CloseSession, _Mapping]] = ..., activated: _Optional[_Union[ActivationReply, _Mapping]] = ...) -> None: ...

class OpenSession(_message.Message):
    __slots__ = ("model", "client_x25519", "expected_key_id", "client_paillier", "progress", "protocol", "tickets")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_X25519_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PAILLIER_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    TICKETS_FIELD_NUMBER: _ClassVar[int]
    model: str
    client_x25519: bytes
    expected_key_id: str
    client_paillier: _tensors_pb2.PaillierPublicKey
    progress: bool
    protocol: int
    tickets: int
    def __init__(self, model: _Optional[str] = ..., client_x25519: _Optional[bytes] = ..., expected_key_id: _Optional[str] = ..., client_paillier: _Optional[_Union[_tensors_pb2.PaillierPublicKey, _Mapping]] = ..., progress: _Optional[bool] = ..., protocol: _Optional[int] = ..., tickets: _Optional[int] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("request_id", "masked_input", "encrypted_input")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MASKED_INPUT_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_INPUT_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    masked_input: _tensors_pb2.Int64Tensor
    encrypted_input: _tensors_pb2.CiphertextChunk
    def __init__(self, request_id: _Optional[int] = ..., masked_input: _Optional[_Union[_tensors_pb2.Int64Tensor, _Mapping]] = ..., encrypted_input: _Optional[_Union[_tensors_pb2.CiphertextChunk, _Mapping]] = ...) -> None: ...

class ActivationReply(_message.Message):
    __slots__ = ("request_id", "chunk")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    chunk: _tensors_pb2.CiphertextChunk
    def __init__(self, request_id: _Optional[int] = ..., chunk: _Optional[_Union[_tensors_pb2.CiphertextChunk, _Mapping]] = ...) -> None: ...

class CloseSession(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("opened", "result", "progress", "activation")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    opened: SessionOpened
    result: InferResult
    progress: Progress
    activation: _key_service_pb2.ActivationBatch
    def __init__(self, opened: _Optional[_Union[SessionOpened, _Mapping]] = ..., result: _Optional[_Union[InferResult, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., activation: _Optional[_Union[_key_service_pb2.ActivationBatch, _Mapping]] = ...) -> None: ...

class SessionOpened(_message.Message):
    __slots__ = ("session_id", "key_id", "key_salt", "tickets")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_SALT_FIELD_NUMBER: _ClassVar[int]
    TICKETS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    key_id: str
    key_salt: bytes
    tickets: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, session_id: _Optional[str] = ..., key_id: _Optional[str] = ..., key_salt: _Optional[bytes] = ..., tickets: _Optional[_Iterable[bytes]] = ...) -> None: ...

class InferResult(_message.Message):
    __slots__ = ("request_id", "sealed_output", "output_mask", "output_permutation", "encrypted_output", "output_layout", "ticket")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEALED_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PERMUTATION_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    sealed_output: bytes
    output_mask: _tensors_pb2.BigIntVector
    output_permutation: _containers.RepeatedScalarFieldContainer[int]
    encrypted_output: _tensors_pb2.CiphertextChunk
    output_layout: _tensors_pb2.SlotLayout
    ticket: bytes
    def __init__(self, request_id: _Optional[int] = ..., sealed_output: _Optional[bytes] = ..., output_mask: _Optional[_Union[_tensors_pb2.BigIntVector, _Mapping]] = ..., output_permutation: _Optional[_Iterable[int]] = ..., encrypted_output: _Optional[_Union[_tensors_pb2.CiphertextChunk, _Mapping]] = ..., output_layout: _Optional[_Union[_tensors_pb2.SlotLayout, _Mapping]] = ..., ticket: _Optional[bytes] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("request_id", "layer", "layers")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    layer: int
    layers: int
    def __init__(self, request_id: _Optional[int] = ..., layer: _Optional[int] = ..., layers: _Optional[int] = ...) -> None: ...
