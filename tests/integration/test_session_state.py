"""An open live session holds only what it derives (issue 14, finding 4).

Between frames a session keeps the ID photo's embedding, the usable frames' embeddings
and its challenge state: no decoded image, no crop, no encoded bytes. A caller that owns
the payload (the service) gets it zeroed as soon as it is decoded.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kiosk.domain import Frame
from kiosk.pipeline.session import open_session


def held_arrays(session) -> list[np.ndarray]:
    return list(session.scratch._arrays)


def test_the_session_keeps_embeddings_only_and_wipes_payloads_once_decoded(verifier, photos):
    challenges = dataclasses.replace(verifier.settings.liveness_challenge, enabled=False)
    # Fresh bytes objects the test owns alone, as the service's decoded request fields are.
    id_photo = bytes(bytearray(photos.nuaa_id.read_bytes()))
    with open_session(verifier, id_photo, challenges=challenges, wipe_payload=True) as session:
        assert not session.done
        assert id_photo == bytes(len(id_photo)), "the encoded ID photo must be zeroed once decoded"
        dimension = session.reference.shape
        assert [a.shape for a in held_arrays(session)] == [dimension]  # the ID photo's embedding, nothing else
        for i, path in enumerate(photos.nuaa_frames[:2]):
            frame = Frame(bytes(bytearray(path.read_bytes())), timestamp_ms=100 * i)
            result = session.add_frame(frame, wipe_payload=True)
            assert frame.data == bytes(len(frame.data)), "an encoded frame must be zeroed once decoded"
            assert result.finding is not None and result.finding.face_found
            # Only 1-D embeddings, one per usable frame plus the reference: no image, no crop.
            assert all(a.ndim == 1 and a.shape == dimension for a in held_arrays(session))
            assert len(held_arrays(session)) == 1 + len(session.live_embeddings)
        embeddings = held_arrays(session)
    assert session.reference is None and not session.live_embeddings
    assert all(not a.any() for a in embeddings), "closing the session wipes the embeddings"


def test_an_in_process_caller_keeps_its_bytes(verifier, photos):
    """Without ``wipe_payload`` (tests, the CLI) the caller's bytes are left alone."""
    challenges = dataclasses.replace(verifier.settings.liveness_challenge, enabled=False)
    id_photo = photos.nuaa_id.read_bytes()
    original = bytes(bytearray(id_photo))
    with open_session(verifier, id_photo, challenges=challenges) as session:
        frame = Frame(photos.nuaa_frames[0].read_bytes(), timestamp_ms=0)
        data = bytes(bytearray(frame.data))
        session.add_frame(frame)
        assert frame.data == data
    assert id_photo == original


def test_a_capture_problem_holds_no_traceback(verifier, photos):
    """A traceback would link the problem to its caller's frame (f_back): a cycle that keeps the
    whole call, request message and encoded photos included, alive until the cyclic GC runs."""
    from kiosk.domain import ImageRole
    from kiosk.pipeline.analysis import CaptureProblem, analyse_face, decode_photo
    from kiosk.pipeline.scratch import Scratch, StageTimer

    with Scratch() as scratch:
        timer = StageTimer()
        image = decode_photo(photos.no_face, verifier.rules, scratch, timer)
        result = analyse_face(verifier.models, image, ImageRole.LIVE_FRAME, verifier.rules, scratch, timer)
    assert isinstance(result, CaptureProblem) and result.error.reason == "no_face_in_live_frame"
    assert result.error.__traceback__ is None
