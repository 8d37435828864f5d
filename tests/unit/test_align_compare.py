"""Alignment geometry and similarity arithmetic, without a model."""

import math

import numpy as np

from kiosk.pipeline.align import ALIGNED_SIZE, ARCFACE_TEMPLATE, align_face, similarity_transform
from kiosk.pipeline.compare import cosine_similarity, fuse_embeddings, l2_normalise


def transform(points, angle_deg, scale, shift):
    a = math.radians(angle_deg)
    rotation = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (points @ rotation.T + shift).astype(np.float32)


def test_similarity_transform_recovers_a_known_warp():
    source = transform(ARCFACE_TEMPLATE, 17.0, 2.5, np.array([40.0, -12.0]))
    matrix = similarity_transform(source, ARCFACE_TEMPLATE)
    mapped = source @ matrix[:, :2].T + matrix[:, 2]
    assert np.allclose(mapped, ARCFACE_TEMPLATE, atol=1e-4)


def test_template_maps_to_itself():
    matrix = similarity_transform(ARCFACE_TEMPLATE, ARCFACE_TEMPLATE)
    assert np.allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-6)


def test_aligned_crop_puts_the_eyes_on_the_template():
    # A synthetic image with two bright dots where the "eyes" are, rotated and scaled.
    landmarks = transform(ARCFACE_TEMPLATE, -25.0, 3.0, np.array([100.0, 60.0]))
    image = np.zeros((600, 600, 3), dtype=np.uint8)
    for x, y in landmarks[:2]:
        image[int(round(y)) - 2 : int(round(y)) + 3, int(round(x)) - 2 : int(round(x)) + 3] = 255
    aligned = align_face(image, landmarks)
    assert aligned.shape == (ALIGNED_SIZE, ALIGNED_SIZE, 3)
    for x, y in ARCFACE_TEMPLATE[:2]:
        assert aligned[int(round(y)), int(round(x))].max() > 100


def test_cosine_and_fusion():
    a = l2_normalise(np.array([1.0, 0.0, 0.0], dtype=np.float32))
    b = l2_normalise(np.array([1.0, 1.0, 0.0], dtype=np.float32))
    assert math.isclose(cosine_similarity(a, b), math.sqrt(0.5), rel_tol=1e-6)
    assert math.isclose(cosine_similarity(a, a), 1.0, rel_tol=1e-6)
    fused = fuse_embeddings([a, b])
    assert math.isclose(float(np.linalg.norm(fused)), 1.0, rel_tol=1e-6)
    assert cosine_similarity(fused, a) > cosine_similarity(b, a)


def test_zero_vector_normalises_to_zero_not_nan():
    assert not np.isnan(l2_normalise(np.zeros(4, dtype=np.float32))).any()


def test_scratch_wipes_arrays_and_payloads():
    from kiosk.pipeline.scratch import Scratch

    payload = bytes(range(256)) * 8
    with Scratch() as scratch:
        pixels = scratch.keep(np.full((4, 4, 3), 200, dtype=np.uint8))
        scratch.keep_payload(payload)
    assert not pixels.any()
    assert payload == bytes(len(payload))


def test_scratch_wipes_on_error():
    from kiosk.pipeline.scratch import Scratch

    pixels = np.full(8, 7, dtype=np.uint8)
    try:
        with Scratch() as scratch:
            scratch.keep(pixels)
            raise RuntimeError("stage failed")
    except RuntimeError:
        pass
    assert not pixels.any()
