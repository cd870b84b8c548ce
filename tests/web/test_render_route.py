"""``POST /render`` in-process (TestClient): the PNG it answers holds exactly the pixels the
decode path of ``/predict`` yields (DICOM window/level, MONOCHROME1 inversion, first frame), and
every bad request is a 4xx that says why, under deliberately small limits so each one is met.
The viewer's DICOM preview (test_viewer_render.py) shows this route's answer."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from service.api.app import create_app
from tests.support.app_settings import local_settings
from tests.support.dicom_factory import make_dataset, make_dicom, to_bytes
from tests.support.images import jpeg_bytes, png_bytes, png_header_only
from tests.support.scratch import scratch_dir
from training.dicom import dicom_to_image, read_dicom
from training.preprocess import decode_image_bytes

MPEG2_MAIN_PROFILE = "1.2.840.10008.1.2.4.100"  # a transfer syntax no decoder here reads
TOKENS = {"look": ["predict"], "explainer": ["explain"], "jobs": ["jobs"]}
AUTH = {"Authorization": "Bearer look"}
MAX_UPLOAD_BYTES = 64 * 1024
MAX_IMAGE_PIXELS = 100_000
# 64 bytes a pixel (service.api.decoding): images up to 15,625 pixels fit, a 150 × 150 does not
DECODE_BUDGET_BYTES = 1_000_000


@pytest.fixture(scope="module")
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    with scratch_dir(request, tmp_path_factory, "render") as root:
        settings = local_settings(
            root,
            api_tokens=TOKENS,
            max_upload_bytes=MAX_UPLOAD_BYTES,
            max_image_pixels=MAX_IMAGE_PIXELS,
            decode_memory_budget_bytes=DECODE_BUDGET_BYTES,
        )
        with TestClient(create_app(settings)) as http:
            yield http


def render(client: TestClient, data: bytes, token: str | None = "look", **fields: str):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    files = {"image": ("upload", data, "application/octet-stream")}
    return client.post("/render", files=files, data=fields, headers=headers)


def pixels(response) -> np.ndarray:
    """The answer's PNG as an RGB array (OpenCV decodes BGR)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "no-store"
    decoded = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def refused(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = str(response.json()["detail"])
    for word in words:
        assert word in detail, (word, detail)


def test_a_png_or_jpeg_comes_back_as_the_pixels_predict_decodes(client):
    for data in (png_bytes(), jpeg_bytes()):
        assert np.array_equal(pixels(render(client, data)), decode_image_bytes(data))


def test_a_monochrome1_dicom_comes_back_windowed_and_inverted(client):
    """The same stored values as MONOCHROME2 and MONOCHROME1: each answer is exactly what
    training.dicom renders, and the two are each other's inverse (up to rounding)."""
    values = np.random.default_rng(3).integers(0, 4096, (40, 48), dtype=np.uint16)
    options = {"bits_stored": 12, "WindowCenter": 1500, "WindowWidth": 2000}
    shown = {}
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        data = make_dicom(values, photometric=photometric, **options)
        shown[photometric] = pixels(render(client, data)).astype(int)
        assert np.array_equal(shown[photometric], dicom_to_image(read_dicom(data)))
    # the window clips: a fifth of the values lie below it and some above
    assert shown["MONOCHROME2"].min() == 0 and shown["MONOCHROME2"].max() == 255
    assert np.abs(shown["MONOCHROME1"] + shown["MONOCHROME2"] - 255).max() <= 1


def test_a_real_dicom_as_json_and_a_multi_frame_files_first_frame(client):
    data = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    body = {"image_base64": base64.b64encode(data).decode()}
    answer = client.post("/render", json=body, headers=AUTH)
    assert np.array_equal(pixels(answer), dicom_to_image(read_dicom(data)))

    frames = np.random.default_rng(4).integers(0, 4096, (3, 20, 24), dtype=np.uint16)
    multi = make_dicom(frames, bits_stored=12)
    single = make_dicom(frames[0], bits_stored=12)
    assert np.array_equal(pixels(render(client, multi)), dicom_to_image(read_dicom(single)))
    refused(render(client, multi, multiframe="refuse"), 422, "3 frames")


def test_it_needs_the_predict_scope(client):
    refused(render(client, png_bytes(), token=None), 401, "bearer token")
    refused(render(client, png_bytes(), token="nope"), 401, "invalid")
    for token in ("explainer", "jobs"):
        refused(render(client, png_bytes(), token=token), 403, "'predict'")


def test_limits_are_those_of_predict(client):
    refused(render(client, bytes(MAX_UPLOAD_BYTES + 1)), 413, f"{MAX_UPLOAD_BYTES}-byte limit")
    refused(render(client, png_header_only(1000, 1000)), 413, "pixel limit")
    flat = cv2.imencode(".png", np.zeros((150, 150, 3), np.uint8))[1].tobytes()  # a few KB
    refused(render(client, flat), 413, "decode budget")


def test_bad_input_is_a_4xx_that_says_why(client):
    png = png_bytes()
    refused(render(client, b"hello, not an image"), 415, "not an image")
    refused(render(client, png[: png.rfind(b"IEND") - 4]), 400, "truncated PNG")
    refused(render(client, png, models="derm"), 422, "/render uses no model")
    refused(render(client, png, multiframe="all"), 422)
    plain = client.post("/render", content=png, headers={**AUTH, "Content-Type": "image/png"})
    refused(plain, 415, "multipart/form-data")
    refused(client.post("/render", json={"image": "x"}, headers=AUTH), 422, "image_base64")
    rtplan = Path(get_testdata_file("rtplan.dcm")).read_bytes()
    refused(render(client, rtplan), 422, "no pixel data")
    video = make_dataset(np.zeros((8, 8), np.uint16), transfer_syntax=MPEG2_MAIN_PROFILE)
    video.PixelData = encapsulate([bytes(64)])
    video["PixelData"].VR = "OB"
    refused(render(client, to_bytes(video, implicit_vr=False, little_endian=True)), 415, "MPEG2")
