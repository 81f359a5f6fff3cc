"""An independent LiteRT runner for tests: checks exported .tflite files without nin_keras' own loader."""

import numpy as np


def run_tflite(model, images) -> np.ndarray:
    """Float32 outputs of a .tflite (path or bytes) on raw-pixel `images`, one image per call.

    Integer inputs are quantized with the model's own (scale, zero point) and integer outputs dequantized,
    so a float32, int8 or uint8/batch-1 model is compared on the same footing.
    """
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(model))
    else:
        interpreter = Interpreter(model_path=str(model))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if inp["shape_signature"][0] == -1:  # dynamic batch: size it to one image
        interpreter.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
    interpreter.allocate_tensors()
    outputs = []
    for image in images:
        x = image[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"]).astype("float32")
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        outputs.append(y[0])
    return np.stack(outputs)
