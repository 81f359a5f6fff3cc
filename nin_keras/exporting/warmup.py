"""TF Serving warm-up requests: saved_model/1/assets.extra/tf_serving_warmup_requests.

TF Serving replays the PredictionLog records of that file when it loads a model version, so the first real
request does not pay for graph warm-up. The records are TFRecords of `tensorflow_serving.apis.PredictionLog`
(predict_log.request: model_spec and the `image` input). With tensorflow-serving-api installed (the [serving]
extra) its classes write them; without it the few fields are encoded here, by their field numbers in TF
Serving's prediction_log.proto, predict.proto and model.proto, around TensorFlow's own TensorProto (the test
suite parses both with the real classes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from nin_keras.exporting.converter import INPUT_NAME

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
SIGNATURE = "serving_default"
# PredictionLog.predict_log, PredictLog.request, PredictRequest.model_spec / .inputs, ModelSpec.name /
# .signature_name, map entry key / value.
_PREDICT_LOG, _REQUEST, _MODEL_SPEC, _INPUTS, _NAME, _SIGNATURE_NAME, _KEY, _VALUE = 6, 1, 1, 2, 1, 3, 1, 2


def warmup_records(images, *, model_name: str) -> list[bytes]:
    """One serialized PredictionLog per image batch in `images` (a list of float32 arrays [N, H, W, C])."""
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2  # lazy: [serving] extra
    except ImportError:
        return [_encode_prediction_log(model_name, tf.make_tensor_proto(batch).SerializeToString())
                for batch in images]
    records = []
    for batch in images:
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name,
                                                                            signature_name=SIGNATURE))
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(batch))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def write_warmup_requests(saved_model_version_dir, model, *, count: int = 3) -> Path:
    """Writes `count` batch-1 warm-up requests (raw pixels of random images) for `model`'s SavedModel."""
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (1, *shape)).astype(np.float32) for _ in range(count)]
    path = Path(saved_model_version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in warmup_records(images, model_name=model.name):
            writer.write(record)
    return path


def _encode_prediction_log(model_name: str, tensor: bytes) -> bytes:
    spec = _field(_NAME, model_name.encode()) + _field(_SIGNATURE_NAME, SIGNATURE.encode())
    entry = _field(_KEY, INPUT_NAME.encode()) + _field(_VALUE, tensor)
    request = _field(_MODEL_SPEC, spec) + _field(_INPUTS, entry)
    return _field(_PREDICT_LOG, _field(_REQUEST, request))


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2: strings, bytes and messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
