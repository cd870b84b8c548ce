"""Image input checks: unit tests of sniffing/limits, then every bad input on a real server."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from service.api.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from service.api.images import check_image, decode_image, jpeg_size, png_size, sniff_format
from service.config import Settings
from tests.support.api_server import MAX_UPLOAD_BYTES
from tests.support.dicom_factory import dicom_bytes
from tests.support.images import jpeg_bytes, png_bytes, png_header_only
from training.dicom import CorruptPixelDataError

SETTINGS = Settings(max_upload_bytes=1 << 20, max_image_pixels=10_000)


def test_sizes_come_from_headers():
    assert png_size(png_bytes(height=40, width=48)) == (48, 40)
    assert jpeg_size(jpeg_bytes(height=33, width=21)) == (21, 33)
    assert sniff_format(b"GIF89a...") is None
    assert sniff_format(b"\x00" * 128 + b"DICM") == "dicom"


def test_bomb_header_is_refused_before_decoding():
    bomb = png_header_only(50_000, 50_000)
    assert len(bomb) < 200
    with pytest.raises(PayloadTooLarge, match="2,500,000,000 pixels"):
        check_image(bomb, Settings())  # default limit: 50 Mpx


def test_pixel_limit_is_width_times_height():
    ok = check_image(png_bytes(height=100, width=100), SETTINGS)
    assert (ok.format, ok.width, ok.height) == ("png", 100, 100)
    with pytest.raises(PayloadTooLarge):
        check_image(png_bytes(height=101, width=100), SETTINGS)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (png_bytes()[:-20], BadRequest),  # no IEND
        (png_bytes()[:20], BadRequest),  # no IHDR
        (jpeg_bytes()[:-50], BadRequest),  # no EOI
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", BadRequest),  # no SOF
        (b"hello, world", UnsupportedMediaType),
        (b"", UnsupportedMediaType),
    ],
)
def test_corrupt_and_unknown_bytes(data, error):
    with pytest.raises(error):
        check_image(data, SETTINGS)


def test_disallowed_format():
    with pytest.raises(UnsupportedMediaType, match="jpeg images are not accepted"):
        check_image(jpeg_bytes(), Settings(allowed_formats=["png"]))


def test_garbage_after_a_valid_header_fails_decoding():
    data = png_bytes()
    corrupt = data[:33] + bytes(len(data) - 45) + data[-12:]  # IHDR and IEND kept
    upload = check_image(corrupt, SETTINGS)
    with pytest.raises(BadRequest):
        decode_image(upload)


def test_dicom_first_frame_monochrome1_inverted_and_scaled():
    pytest.importorskip("pydicom")
    data, pixels = dicom_bytes(rows=12, columns=10, frames=3, photometric="MONOCHROME1")
    upload = check_image(data, Settings())
    assert (upload.format, upload.width, upload.height, upload.frames) == ("dicom", 10, 12, 3)
    image = decode_image(upload)
    assert image.shape == (12, 10, 3) and image.dtype == np.uint8
    first = pixels[0].astype(np.float64)  # no window in the file: min-max of the first frame
    expected = 255 - np.rint((first - first.min()) * 255 / (first.max() - first.min()))
    for channel in range(3):
        np.testing.assert_allclose(image[:, :, channel], expected, atol=1)
    assert image[pixels[0] == pixels[0].max()].max() == 0  # brightest value shows darkest


def test_truncated_dicom_pixels_are_refused():
    pytest.importorskip("pydicom")
    data, _ = dicom_bytes(rows=40, columns=40)
    upload = check_image(data[:-400], Settings())
    with pytest.raises(CorruptPixelDataError, match="DICOM"):  # 400 through the error mapper
        decode_image(upload)


def test_dicom_rows_of_the_wrong_length_are_refused():
    """Rows (US) stored in 3 bytes: pydicom raises its own exception type on reading it."""
    pytest.importorskip("pydicom")
    data, _ = dicom_bytes(rows=16, columns=16)
    rows = b"\x28\x00\x10\x00US\x02\x00\x10\x00"
    assert data.count(rows) == 1
    with pytest.raises(BadRequest, match="Rows / Columns"):
        check_image(data.replace(rows, b"\x28\x00\x10\x00US\x03\x00\x10\x00\x00"), SETTINGS)


def test_dicom_frames_count_towards_the_pixel_limit():
    pytest.importorskip("pydicom")
    data, _ = dicom_bytes(rows=50, columns=50, frames=5)
    with pytest.raises(PayloadTooLarge, match="5 frames"):
        check_image(data, SETTINGS)


# --- on the real server: every bad input is a 4xx with a message ----------------------------


def _post_file(client, data: bytes, content_type: str = "image/png", **fields):
    fields.setdefault("models", "derm-baseline")
    return client.post("/predict", files={"image": ("f", data, content_type)}, data=fields)


def _assert_4xx(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail
    for word in words:
        assert word in str(detail), detail


@pytest.mark.integration
def test_bad_images_over_http(client):
    png = png_bytes()
    _assert_4xx(_post_file(client, png[: len(png) // 2]), 400, "truncated")
    _assert_4xx(_post_file(client, png[:33] + b"\x00" * 300 + png[-12:]), 400, "decode")
    _assert_4xx(_post_file(client, b"just some text\n", "text/plain"), 415, "png")
    _assert_4xx(_post_file(client, png_header_only(50_000, 50_000)), 413, "pixels")
    _assert_4xx(_post_file(client, b"x" * (MAX_UPLOAD_BYTES + 1)), 413, "limit")
    _assert_4xx(_post_file(client, jpeg_bytes()[:-40]), 400, "JPEG")
    _assert_4xx(_post_file(client, b"\x00" * 128 + b"DICMgarbage"), 400, "corrupt DICOM")


@pytest.mark.integration
def test_bad_bodies_over_http(client):
    image = base64.b64encode(png_bytes()).decode()
    _assert_4xx(client.post("/predict", content=b"", headers={"Content-Type": "image/png"}), 415)
    _assert_4xx(client.post("/predict", content=b"hi", headers={"Content-Type": "text/plain"}), 415)
    _assert_4xx(client.post("/predict"), 415, "multipart")
    _assert_4xx(
        client.post("/predict", content=b"", headers={"Content-Type": "application/json"}),
        422,
        "empty",
    )
    _assert_4xx(
        client.post("/predict", content=b"{nope", headers={"Content-Type": "application/json"}),
        400,
        "JSON",
    )
    _assert_4xx(client.post("/predict", json=[1, 2]), 422, "object")
    _assert_4xx(client.post("/predict", json={"models": ["derm"]}), 422, "image_base64")
    bad_base64 = {"image_base64": "%%%", "task": "derm"}
    _assert_4xx(client.post("/predict", json=bad_base64), 422, "base64")
    _assert_4xx(client.post("/predict", json={"image_base64": 5, "task": "derm"}), 422, "string")
    _assert_4xx(
        client.post("/predict", json={"image_base64": image, "task": "derm", "colour": 1}),
        422,
        "colour",
    )
    _assert_4xx(client.post("/predict", data={"models": "derm"}), 415, "multipart")
    _assert_4xx(client.post("/predict", files={"models": (None, "derm")}), 422, "'image'")
    _assert_4xx(
        client.post("/predict", files={"other": ("x.png", png_bytes())}, data={"task": "derm"}),
        422,
        "'image'",
    )
    oversize = b"A" * (2 * MAX_UPLOAD_BYTES)
    _assert_4xx(
        client.post("/predict", content=oversize, headers={"Content-Type": "application/json"}),
        413,
        "limit",
    )


@pytest.mark.integration
def test_unknown_models_over_http(client):
    image = base64.b64encode(png_bytes()).decode()
    for ref, status in (
        ("nosuch", 404),
        ("derm:99", 404),
        ("derm:nosuchalias", 404),
        ("../etc", 422),
        ("derm:a:b", 422),
    ):
        response = client.post("/predict", json={"image_base64": image, "models": [ref]})
        _assert_4xx(response, status)
    _assert_4xx(
        client.post("/predict", json={"image_base64": image, "models": ["nosuch"]}),
        404,
        "derm",  # names the stored models
    )
    _assert_4xx(client.post("/predict", json={"image_base64": image, "models": []}), 422)
