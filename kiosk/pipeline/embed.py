"""Face embedder: aligned 112x112 face -> L2-normalised embedding."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from kiosk.pipeline.compare import l2_normalise
from kiosk.pipeline.tensors import run_model
from kiosk.pipeline.types import AlignedFace, Embedding
from kiosk.runtime.manifest import ModelEntry


class Embedder:
    def __init__(self, session: ort.InferenceSession, entry: ModelEntry):
        self.session = session
        self.entry = entry
        self.output_name = entry.outputs[0]

    def embed(self, face: AlignedFace) -> Embedding:
        (raw,) = run_model(self.session, self.entry, face[np.newaxis], [self.output_name])
        embedding = l2_normalise(raw[0].astype(np.float32))
        raw.fill(0)
        return embedding
