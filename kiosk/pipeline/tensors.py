"""Turn uint8 BGR image batches into a model's input tensor as its manifest entry says."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort

from kiosk.runtime.manifest import InputSpec, ModelEntry

_LAYOUT_AXES = {
    # From (N, H, W, C) to the model's axis order.
    "NHWC": (0, 1, 2, 3),
    "NCHW": (0, 3, 1, 2),
    "NWHC": (0, 2, 1, 3),
}


def to_input_tensor(batch_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(N, H, W, 3) uint8 BGR -> contiguous float32 tensor in the model's layout, colour and scale."""
    if spec.colour == "RGB":
        pixels = batch_bgr[..., ::-1]
    elif spec.colour == "GRAY":
        pixels = np.stack([cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) for img in batch_bgr])[..., np.newaxis]
    else:
        pixels = batch_bgr
    # Laid out while converting: one float32 buffer, written once in the model's axis order
    # (the same float32 arithmetic as converting, then scaling, then transposing a copy).
    view = pixels.transpose(_LAYOUT_AXES[spec.layout])
    tensor = np.empty(view.shape, dtype=np.float32)
    if spec.mean:
        np.subtract(view, np.float32(spec.mean), out=tensor, dtype=np.float32)
    else:
        tensor[...] = view
    if pixels is not batch_bgr and not np.shares_memory(pixels, batch_bgr):
        pixels.fill(0)
    if spec.std != 1.0:
        tensor *= np.float32(1.0 / spec.std)
    return tensor


def run_model(
    session: ort.InferenceSession, entry: ModelEntry, batch_bgr: np.ndarray, outputs: list[str]
) -> list[np.ndarray]:
    """Run a model on a uint8 BGR batch; its input tensor is wiped before this returns, on error too."""
    tensor = to_input_tensor(batch_bgr, entry.input)
    try:
        return session.run(outputs, {entry.input.name: tensor})
    finally:
        tensor.fill(0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 so a confident logit does not round to exactly 1."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
