"""OneFlow's `OFRecord` protobuf messages, built from their schema here so that data tools need no OneFlow.

The messages mirror `oneflow/core/record/record.proto` (package `oneflow`) field for field, so their
wire format is the one OneFlow's readers parse; they live in a private descriptor pool and never
clash with `oneflow.core.record.record_pb2` when OneFlow is imported too.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "oneflow"
_F = descriptor_pb2.FieldDescriptorProto

# list message -> (protobuf scalar type, packed)
_LISTS = {
    "BytesList": (_F.TYPE_BYTES, False),
    "FloatList": (_F.TYPE_FLOAT, True),
    "DoubleList": (_F.TYPE_DOUBLE, True),
    "Int32List": (_F.TYPE_INT32, True),
    "Int64List": (_F.TYPE_INT64, True),
}
# Feature.kind oneof: field name -> (field number, list message)
_FEATURE_KINDS = {
    "bytes_list": (1, "BytesList"),
    "float_list": (2, "FloatList"),
    "double_list": (3, "DoubleList"),
    "int32_list": (4, "Int32List"),
    "int64_list": (5, "Int64List"),
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto of record.proto (proto2, as OneFlow declares it)."""
    proto = descriptor_pb2.FileDescriptorProto(name="faceflow/ofrecord.proto", package=_PACKAGE, syntax="proto2")
    for name, (scalar, packed) in _LISTS.items():
        message = proto.message_type.add(name=name)
        field = message.field.add(name="value", number=1, type=scalar, label=_F.LABEL_REPEATED)
        if packed:
            field.options.packed = True
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for field_name, (number, list_name) in _FEATURE_KINDS.items():
        feature.field.add(name=field_name, number=number, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                          type_name=f".{_PACKAGE}.{list_name}", oneof_index=0)
    record = proto.message_type.add(name="OFRecord")
    entry = record.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                    type_name=f".{_PACKAGE}.Feature")
    record.field.add(name="feature", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                     type_name=f".{_PACKAGE}.OFRecord.FeatureEntry")
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
OFRecord = message_factory.MessageFactory(_POOL).GetPrototype(_POOL.FindMessageTypeByName(f"{_PACKAGE}.OFRecord"))
Feature = message_factory.MessageFactory(_POOL).GetPrototype(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Feature"))

__all__ = ["Feature", "OFRecord"]
