"""Every outcome a kiosk UI must handle: retry reasons, guidance codes, failed liveness checks.

One list with each code's meaning and the English text to show, for UI builders: the
README's "Outcomes for kiosk UIs" table and the comments in proto/kiosk/v1/kiosk.proto
carry the same codes, and tests/unit/test_cli_outcomes.py fails when the code can emit
a code that is not here (or the README or the proto omits one). Codes are stable API;
the screen texts are suggestions a kiosk may translate.
"""

from __future__ import annotations

# VerifyResponse.retry_reason (decision RETRY): code -> (meaning, screen text).
RETRY_REASONS: dict[str, tuple[str, str]] = {
    "no_face_in_id_photo": (
        "no face was found in the ID photo",
        "We could not read the photo on your ID card. Please ask a member of staff.",
    ),
    "no_face_in_live_frame": (
        "no face was found in a live photo",
        "Please look at the camera.",
    ),
    "multiple_faces_in_live_frame": (
        "a second face of comparable size is in a live photo",
        "Only the person registering should be in front of the camera.",
    ),
    "low_quality": (
        "a face failed a quality check; findings[].quality names it and its guidance code",
        "Show the guidance of the failed checks (e.g. \"Move closer to the camera\"), then retry.",
    ),
    "presentation_attack_suspected": (
        "the passive liveness model scored a live photo as a photo, screen or mask",
        "Please retry with a member of staff present.",
    ),
    "no_usable_live_frames": (
        "a live session reached its frame limit without a usable face",
        "We could not see your face clearly. Please start again.",
    ),
    "liveness_failed": (
        "a live session's liveness check failed; liveness.failed_check names it",
        "Please start again and follow the instructions on the screen.",
    ),
    "live_frame_is_id_photo": (
        "a live photo reproduces the ID photo (a digital copy, not a camera capture); liveness.failed_check is id_photo_copy",
        "Please look at the camera: the photo must be taken now.",
    ),
    "poor_lighting": (
        "the live face did not match while a lighting check (TOO_DARK, TOO_BRIGHT) failed: the light, not the person, may be why; counted in kiosk_retries_total for the operator",
        "Please retry; a member of staff will check the light.",
    ),
}

# GuidanceItem.code (live sessions) and QualityCheck.code: code -> (meaning, screen text).
GUIDANCE_CODES: dict[str, tuple[str, str]] = {
    "NO_FACE": ("no face in the frame", "No face found: look at the camera"),
    "ONLY_ONE_PERSON": (
        "a second face of comparable size is in the frame",
        "Only the person registering should be in front of the camera",
    ),
    "GOOD_FRAME": ("the frame is usable; keep going", "Hold still"),
    "MOVE_CLOSER": ("the face is too small (eyes too close together in pixels)", "Move closer to the camera"),
    "MOVE_BACK": ("the face fills or leaves the frame", "Move back from the camera"),
    "FACE_THE_CAMERA": ("the head is turned, nodded or tilted too far", "Look straight at the camera"),
    "HOLD_STILL": ("the face is blurred", "Hold still"),
    "TOO_DARK": ("the face is too dark or has too little contrast", "Too dark: find more light"),
    "TOO_BRIGHT": ("the face is over-exposed", "Too bright: avoid direct light"),
    "OPEN_EYES": ("both eyes look closed", "Keep your eyes open"),
    "NOISY_IMAGE": ("the camera image is too noisy (low light, high gain) for the liveness check", "Too dark: more light is needed"),
}

# LivenessOutcome.failed_check (liveness FAILED): code -> (meaning, screen text).
FAILED_CHECKS: dict[str, tuple[str, str]] = {
    "challenge_timeout": (
        "the prompted challenge was not seen before its deadline",
        "Please start again and respond to each instruction straight away.",
    ),
    "wrong_action": (
        "a different deliberate action than the one prompted",
        "Please start again and do only what the screen asks.",
    ),
    "face_lost": (
        "the face was out of view for more than 300 ms during the challenges",
        "Please start again and stay in front of the camera.",
    ),
    "multiple_faces": (
        "a second person appeared during the challenges",
        "Only the person registering should be in front of the camera. Please start again.",
    ),
    "identity_changed": (
        "a frame's face did not match the session's first live face",
        "Please start again; only the person registering may take part.",
    ),
    "frame_timing": (
        "frames closer than 20 ms or further apart than 500 ms (a kiosk fault)",
        "Something went wrong with the camera. Please start again.",
    ),
    "nonce_mismatch": (
        "a frame echoed an unknown challenge nonce (a kiosk fault or a replay)",
        "Something went wrong. Please start again.",
    ),
    "passive": (
        "the passive liveness model scored a frame as a photo, screen or mask",
        "Please retry with a member of staff present.",
    ),
    "id_photo_copy": (
        "a live photo reproduces the ID photo (resampled, re-encoded or cropped copy)",
        "Please look at the camera: the photo must be taken now.",
    ),
}

# VerifyResponse.message on a decision the service did make.
DECISION_MESSAGES = {
    "match": "the live face matches the ID photo",
    "no_match": "the live face does not match the ID photo: staff should check the ID card",
}
