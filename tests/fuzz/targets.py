"""Fuzz targets shared by the atheris drivers and the corpus regression test.

Each target takes arbitrary bytes and either returns quietly or raises
``AssertionError`` (a broken invariant). The refusals a hostile input is supposed to
get (``InvalidImage``, ``InvalidRequest``, a protobuf ``DecodeError``) are swallowed
here; anything else escaping is a crash for the fuzzer and a failure for pytest.
"""

from __future__ import annotations

import numpy as np
from google.protobuf.message import DecodeError

from kiosk.errors import InvalidImage, InvalidRequest
from kiosk.pipeline.decode import ImageLimits, decode_image, decode_raw_frame
from kiosk.server import convert
from kiosk.settings import Settings
from kiosk.v1 import kiosk_pb2 as pb


def service_limits() -> ImageLimits:
    """The limits the service runs with: fuzz what production decodes."""
    limits = Settings().limits
    return ImageLimits(limits.max_image_bytes, limits.max_image_pixels, limits.max_image_side)


def _check_image(image: np.ndarray, limits: ImageLimits) -> None:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, image.shape
    height, width = image.shape[:2]
    assert 0 < height <= limits.max_side and 0 < width <= limits.max_side, image.shape
    assert height * width <= limits.max_pixels, image.shape


def decode_target(data: bytes, limits: ImageLimits) -> None:
    """Untrusted bytes through the service's decoder: a clean refusal or a bounded BGR image."""
    try:
        image = decode_image(data, limits)
    except InvalidImage as e:
        assert e.message, "a refusal needs a message for the client"
        return
    _check_image(image, limits)


def request_target(data: bytes, limits: ImageLimits, max_live_photos: int) -> None:
    """Bytes as a VerifyRequest and as a SessionRequest, through convert to domain types.

    Raw camera frames go on through ``decode_raw_frame``: their width, height and
    pixel format come straight from the message.
    """
    try:
        call = convert.verify_call_from_proto(pb.VerifyRequest.FromString(data), max_live_photos)
    except (DecodeError, InvalidRequest):
        pass
    else:
        assert call.id_photo and 0 < len(call.live_photos) <= max_live_photos and all(call.live_photos)
    try:
        message = pb.SessionRequest.FromString(data)
    except DecodeError:
        return
    for convert_one in (convert.session_opening_from_proto, convert.frame_from_proto):
        try:
            result = convert_one(message)
        except InvalidRequest:
            continue
        if convert_one is convert.frame_from_proto and result.pixel_format != "encoded":
            try:
                image = decode_raw_frame(result.data, result.width, result.height, result.pixel_format, limits)
            except InvalidImage:
                continue
            _check_image(image, limits)
