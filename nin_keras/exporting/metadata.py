"""TFLite metadata for image classifiers: what MediaPipe Tasks, Android Studio and the LiteRT support library read.

The metadata is a flatbuffer of the published TFLite metadata schema (tflite-support's
metadata_schema.fbs, file identifier "M001"), stored in the model as a buffer named "TFLITE_METADATA"; the
label file it names is packed as a zip archive appended to the model (TFLite runtimes ignore the bytes after
the model's flatbuffer). No maintained writer installs beside TensorFlow and tfmot (tflite-support pins
protobuf < 4, mediapipe pins absl-py >= 2.3), so this module writes the few tables an image classifier needs
with the `flatbuffers` package TensorFlow already depends on, and reads them back for tests and reports.

Field slots follow the schema's declaration order (a flatbuffer field's slot is its position in its table).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import zipfile

import flatbuffers
import numpy as np
from flatbuffers import number_types
from flatbuffers.table import Table

from nin_keras.errors import InvalidInputError, one_line
from nin_keras.export_layout import format_labels, parse_labels
from nin_keras.exporting.tflite_guard import is_own_tflite, remember_own_tflite

METADATA_BUFFER_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
# The oldest metadata parser that understands every field written here (none newer than schema 1.0.0).
MIN_PARSER_VERSION = "1.0.0"

# Most bytes the files packed after a model may expand to (reading refuses more): a label file is a few kB.
MAX_PACKED_BYTES = 64 * 2**20
# Enum and union values of the schema.
COLOR_SPACES = {"RGB": 1, "GRAYSCALE": 2}
_IMAGE_PROPERTIES = 2  # ContentProperties union: FeatureProperties = 1, ImageProperties = 2
_FEATURE_PROPERTIES = 1
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union
TENSOR_AXIS_LABELS = 2  # AssociatedFileType

# Slots, per table (schema order).
_MODEL = dict(name=0, description=1, version=2, subgraph_metadata=3, author=4, license=5, associated_files=6,
              min_parser_version=7)
_SUBGRAPH = dict(name=0, description=1, input_tensor_metadata=2, output_tensor_metadata=3)
_TENSOR = dict(name=0, description=1, dimension_names=2, content=3, process_units=4, stats=5, associated_files=6)
_CONTENT = dict(content_properties_type=0, content_properties=1, range=2)
_IMAGE = dict(color_space=0, default_size=1)
_SIZE = dict(width=0, height=1)
_PROCESS_UNIT = dict(options_type=0, options=1)
_NORMALIZATION = dict(mean=0, std=1)
_STATS = dict(max=0, min=1)
_FILE = dict(name=0, description=1, type=2, locale=3)


@dataclasses.dataclass
class ClassifierMetadata:
    """What the metadata says about one image classifier.

    Attributes:
        name, description, version, author, license: shown by model viewers (Netron, Android Studio).
        color_space: "RGB" or "GRAYSCALE".
        height, width: the image size the model takes.
        mean, std: the input normalization `(x - mean) / std` a client applies before the model; nin-keras
            models take raw pixels (they scale inside), so mean 0 and std 1.
        labels: class names, one per output, packed as `labels_file`.
        input_name, output_name: the tensors' names in the metadata.
    """

    name: str
    description: str
    version: str
    color_space: str
    height: int
    width: int
    labels: list
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    author: str = "nin-keras"
    license: str = ""
    input_name: str = "image"
    output_name: str = "probabilities"
    labels_file: str = "labels.txt"
    input_range: tuple = (0.0, 255.0)


def with_metadata(model_bytes: bytes, metadata: ClassifierMetadata) -> bytes:
    """`model_bytes` (a .tflite) with `metadata` stored in it and its label file packed; any earlier
    metadata and packed files are replaced."""
    if metadata.color_space not in COLOR_SPACES:
        raise InvalidInputError(f"color_space must be one of {sorted(COLOR_SPACES)}; "
                                f"received {metadata.color_space!r}.")
    from ai_edge_litert import schema_py_generated as schema  # lazy: the model's own flatbuffer schema

    flatbuffer = bytes(model_bytes[:_flatbuffer_size(model_bytes)])
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    model.buffers, model.metadata = model.buffers or [], model.metadata or []
    entry = next((e for e in model.metadata if _name(e.name) == METADATA_BUFFER_NAME), None)
    if entry is None:  # a new buffer; metadata written before reuses its own
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_BUFFER_NAME, len(model.buffers)
        model.buffers.append(schema.BufferT())
        model.metadata.append(entry)
    model.buffers[entry.buffer].data = np.frombuffer(metadata_flatbuffer(metadata), dtype=np.uint8)
    _name_io_tensors(model.subgraphs[0], metadata)
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=MODEL_IDENTIFIER)
    packed = io.BytesIO()
    packed.write(builder.Output())
    with zipfile.ZipFile(packed, "a", compression=zipfile.ZIP_STORED) as archive:  # appended after the model
        archive.writestr(metadata.labels_file, format_labels(metadata.labels))
    if is_own_tflite(model_bytes):  # nin-keras' converter output with metadata added is still its own
        remember_own_tflite(packed.getvalue())
    return packed.getvalue()


def _name_io_tensors(subgraph, metadata: ClassifierMetadata) -> None:
    """Names the input and output tensors as the signature does (the converter calls them
    "serving_default_image:0" and "StatefulPartitionedCall:0"), for clients that list tensors by name."""
    for indices, name in ((subgraph.inputs, metadata.input_name), (subgraph.outputs, metadata.output_name)):
        if indices is not None and len(indices) == 1:
            subgraph.tensors[int(indices[0])].name = name


def metadata_flatbuffer(metadata: ClassifierMetadata) -> bytes:
    """The "M001" flatbuffer of `metadata` (a ModelMetadata table)."""
    b = flatbuffers.Builder(1024)
    labels = _table(b, _FILE, name=b.CreateString(metadata.labels_file),
                    description=b.CreateString("Class names, one per line, in the order of the output scores."),
                    type=(number_types.Int8Flags, TENSOR_AXIS_LABELS))
    size = _table(b, _SIZE, width=(number_types.Uint32Flags, metadata.width),
                  height=(number_types.Uint32Flags, metadata.height))
    image = _table(b, _IMAGE, color_space=(number_types.Int8Flags, COLOR_SPACES[metadata.color_space]),
                   default_size=size)
    image_content = _table(b, _CONTENT, content_properties_type=(number_types.Uint8Flags, _IMAGE_PROPERTIES),
                           content_properties=image)
    normalization = _table(b, _NORMALIZATION, mean=_floats(b, metadata.mean), std=_floats(b, metadata.std))
    unit = _table(b, _PROCESS_UNIT, options_type=(number_types.Uint8Flags, _NORMALIZATION_OPTIONS),
                  options=normalization)
    input_stats = _table(b, _STATS, max=_floats(b, [metadata.input_range[1]]),
                         min=_floats(b, [metadata.input_range[0]]))
    image_tensor = _table(
        b, _TENSOR, name=b.CreateString(metadata.input_name), content=image_content,
        description=b.CreateString(f"{metadata.color_space} image, {metadata.height}x{metadata.width}, raw pixel "
                                   "values 0..255 (the model scales them itself)."),
        process_units=_offsets(b, [unit]), stats=input_stats)
    feature = _table(b, {})  # FeatureProperties has no fields
    scores_content = _table(b, _CONTENT, content_properties_type=(number_types.Uint8Flags, _FEATURE_PROPERTIES),
                            content_properties=feature)
    scores_stats = _table(b, _STATS, max=_floats(b, [1.0]), min=_floats(b, [0.0]))
    scores_tensor = _table(
        b, _TENSOR, name=b.CreateString(metadata.output_name), content=scores_content, stats=scores_stats,
        description=b.CreateString(f"Probabilities of the {len(metadata.labels)} classes."),
        associated_files=_offsets(b, [labels]))
    subgraph = _table(b, _SUBGRAPH, name=b.CreateString(metadata.name),
                      input_tensor_metadata=_offsets(b, [image_tensor]),
                      output_tensor_metadata=_offsets(b, [scores_tensor]))
    root = _table(b, _MODEL, name=b.CreateString(metadata.name), description=b.CreateString(metadata.description),
                  version=b.CreateString(metadata.version), subgraph_metadata=_offsets(b, [subgraph]),
                  author=b.CreateString(metadata.author), license=b.CreateString(metadata.license),
                  min_parser_version=b.CreateString(MIN_PARSER_VERSION))
    b.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def read_metadata(model_bytes: bytes, *, label: str = "the model") -> dict | None:
    """The metadata of a .tflite as a dict (the fields written by `with_metadata`, plus "packed_files": the
    names in its appended archive), or None when it has none.

    Raises:
        InvalidInputError: the metadata (or the packed archive) is damaged or crafted; the message names
            `label` and says that the model itself may still run.
    """
    try:
        return _read_metadata(model_bytes)
    except InvalidInputError as error:
        raise _damaged(label, error) from None
    except Exception as error:  # reading a damaged flatbuffer raises struct, index, type, unicode ... errors
        raise _damaged(label, error) from None


def _damaged(label: str, error: Exception) -> InvalidInputError:
    return InvalidInputError(
        f"The TFLite metadata of {label} is damaged ({one_line(error, 200)}); this says nothing about the model "
        "itself, which may still run. Export the model again to rewrite its metadata."
    )


def _read_metadata(model_bytes: bytes) -> dict | None:
    from ai_edge_litert import schema_py_generated as schema  # lazy: the model's own flatbuffer schema

    model = schema.Model.GetRootAs(bytearray(model_bytes[:_flatbuffer_size(model_bytes)]), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _name(entry.Name()) == METADATA_BUFFER_NAME:
            data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            break
    else:
        return None
    if data[4:8] != METADATA_IDENTIFIER:
        raise InvalidInputError(f"the {METADATA_BUFFER_NAME} buffer is not TFLite metadata (identifier "
                                f"{data[4:8]!r})")
    root = _root(data)
    subgraph = _tables(root, _MODEL["subgraph_metadata"])[0]
    result = {key: _string(root, slot) for key, slot in _MODEL.items()
              if key not in ("subgraph_metadata", "associated_files")}
    result["input"] = [_read_tensor(t) for t in _tables(subgraph, _SUBGRAPH["input_tensor_metadata"])]
    result["output"] = [_read_tensor(t) for t in _tables(subgraph, _SUBGRAPH["output_tensor_metadata"])]
    result["packed_files"] = packed_files(model_bytes)
    return result


def describe_metadata(metadata: dict | None, *, label: str = "the model") -> dict | None:
    """A short account of `read_metadata`'s result, for manifests and reports.

    Raises:
        InvalidInputError: metadata without the tables an image classifier's has (damaged or crafted).
    """
    if metadata is None:
        return None
    try:
        return _describe(metadata)
    except Exception as error:  # a table or file missing from what read_metadata found
        raise _damaged(label, error) from None


def _describe(metadata: dict) -> dict:
    image, scores = metadata["input"][0], metadata["output"][0]
    normalization = image.get("normalization") or {}
    labels = [f["name"] for f in scores.get("associated_files", [])]
    packed = metadata.get("packed_files", {})
    count = len(parse_labels(packed[labels[0]].decode("utf-8", "replace"))) if labels and labels[0] in packed else 0
    return {"name": metadata["name"], "version": metadata["version"],
            "input": f"{image['name']}: {image.get('color_space')} image {'x'.join(map(str, image.get('size', ())))}, "
                     f"normalization mean {normalization.get('mean')} std {normalization.get('std')}",
            "output": f"{scores['name']}: {count} class probabilities, labels {', '.join(labels) or 'none'}"}


def package_version() -> str:
    """nin-keras' installed version ("unknown" when running from a source tree that was never installed)."""
    try:
        return importlib.metadata.version("nin-keras")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def packed_files(model_bytes: bytes) -> dict[str, bytes]:
    """The files packed after a .tflite's flatbuffer (name -> contents); empty when there are none.

    Raises:
        InvalidInputError: the archive declares more than MAX_PACKED_BYTES of files (a label file is a few kB;
            a crafted archive could otherwise expand to any size).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            declared = sum(info.file_size for info in archive.infolist())
            if declared > MAX_PACKED_BYTES:
                raise InvalidInputError(f"the files packed after the model declare {declared:,} bytes, more than "
                                        f"the {MAX_PACKED_BYTES:,} a label file could need")
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}


# --------------------------------------------------------------------------------------- writing helpers


def _table(b, slots: dict, **fields):
    """A table with `fields` (an offset, or (flags, value) for a scalar) in the slots `slots` gives them."""
    b.StartObject(len(slots))
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, tuple):
            flags, number = value
            b.PrependSlot(flags, slots[key], number, None)  # never elided: a default still gets written
        else:
            b.PrependUOffsetTRelativeSlot(slots[key], value, 0)
    return b.EndObject()


def _floats(b, values):
    return b.CreateNumpyVector(np.asarray(values, dtype=np.float32))


def _offsets(b, offsets):
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


# --------------------------------------------------------------------------------------- reading helpers


def _flatbuffer_size(model_bytes) -> int:
    """Bytes of the model's flatbuffer: all of them, less an archive appended after it."""
    end = len(model_bytes)
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            infos = archive.infolist()
            if infos:
                end = min(info.header_offset for info in infos)
    except zipfile.BadZipFile:
        pass
    return end


def _name(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _root(data: bytes) -> Table:
    offset = flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0)
    return Table(bytearray(data), offset)


def _field(table: Table, slot: int) -> int:
    return table.Offset(4 + 2 * slot)


def _string(table: Table, slot: int) -> str | None:
    offset = _field(table, slot)
    return table.String(offset + table.Pos).decode() if offset else None


def _scalar(table: Table, slot: int, flags):
    offset = _field(table, slot)
    return table.Get(flags, offset + table.Pos) if offset else None


def _subtable(table: Table, slot: int) -> Table | None:
    offset = _field(table, slot)
    return Table(table.Bytes, table.Indirect(offset + table.Pos)) if offset else None


def _tables(table: Table, slot: int) -> list[Table]:
    offset = _field(table, slot)
    if not offset:
        return []
    start = table.Vector(offset)
    return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(offset))]


def _floats_at(table: Table | None, slot: int) -> list[float]:
    if table is None or not _field(table, slot):
        return []
    return [float(v) for v in table.GetVectorAsNumpy(number_types.Float32Flags, _field(table, slot))]


def _read_tensor(tensor: Table) -> dict:
    result = {"name": _string(tensor, _TENSOR["name"]), "description": _string(tensor, _TENSOR["description"])}
    content = _subtable(tensor, _TENSOR["content"])
    kind = _scalar(content, _CONTENT["content_properties_type"], number_types.Uint8Flags) if content else None
    result["content"] = {_IMAGE_PROPERTIES: "image", _FEATURE_PROPERTIES: "feature"}.get(kind)
    if kind == _IMAGE_PROPERTIES:
        image = _subtable(content, _CONTENT["content_properties"])
        color = _scalar(image, _IMAGE["color_space"], number_types.Int8Flags)
        result["color_space"] = {v: k for k, v in COLOR_SPACES.items()}.get(color)
        size = _subtable(image, _IMAGE["default_size"])
        if size is not None:
            result["size"] = (_scalar(size, _SIZE["height"], number_types.Uint32Flags),
                              _scalar(size, _SIZE["width"], number_types.Uint32Flags))
    for unit in _tables(tensor, _TENSOR["process_units"]):
        if _scalar(unit, _PROCESS_UNIT["options_type"], number_types.Uint8Flags) == _NORMALIZATION_OPTIONS:
            options = _subtable(unit, _PROCESS_UNIT["options"])
            result["normalization"] = {"mean": _floats_at(options, _NORMALIZATION["mean"]),
                                       "std": _floats_at(options, _NORMALIZATION["std"])}
    stats = _subtable(tensor, _TENSOR["stats"])
    if stats is not None:
        result["range"] = (_floats_at(stats, _STATS["min"]), _floats_at(stats, _STATS["max"]))
    result["associated_files"] = [
        {"name": _string(f, _FILE["name"]), "type": _scalar(f, _FILE["type"], number_types.Int8Flags)}
        for f in _tables(tensor, _TENSOR["associated_files"])]
    return result
