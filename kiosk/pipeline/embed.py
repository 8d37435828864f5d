"""Face embedder: aligned face -> L2-normalised embedding.

The aligned size (112 for both bundled embedders) and the tensor layout, colour and
scale come from the model's manifest entry, so another embedder is a manifest entry
and a ``[models] embedder`` setting, not a code change.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from kiosk.errors import ModelIntegrityError
from kiosk.pipeline.compare import l2_normalise
from kiosk.pipeline.tensors import run_model
from kiosk.pipeline.types import AlignedFace, Embedding
from kiosk.runtime.manifest import ModelEntry


class Embedder:
    def __init__(self, session: ort.InferenceSession, entry: ModelEntry):
        self.session = session
        self.entry = entry
        self.output_name = entry.outputs[0]
        self.aligned_size = aligned_size(entry)

    def embed(self, face: AlignedFace) -> Embedding:
        (raw,) = run_model(self.session, self.entry, face[np.newaxis], [self.output_name])
        embedding = l2_normalise(raw[0].astype(np.float32))
        raw.fill(0)
        return embedding

    def warm_up(self) -> None:
        self.embed(np.zeros((self.aligned_size, self.aligned_size, 3), dtype=np.uint8))


def aligned_size(entry: ModelEntry) -> int:
    """The side of the square face crop the embedder takes, read from its input shape."""
    height_axis = entry.input.layout.index("H")
    size = entry.input.shape[height_axis]
    if not isinstance(size, int) or size != entry.input.shape[entry.input.layout.index("W")]:
        raise ModelIntegrityError(f"embedder {entry.file}: the manifest gives no fixed square input size")
    return size
