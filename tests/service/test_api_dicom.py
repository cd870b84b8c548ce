"""DICOM through ``POST /predict`` and ``POST /explain`` on a real uvicorn server.

Real files (pydicom's wheel and pydicom-data) for what decodes; generated ones for the rest.
Every refusal is a 4xx whose message says why; no patient value reaches a response or the log.
A chest model that declares CR/DX + CHEST is added to the session's store for the mismatch
cases (the registry resolves refs against the store on every request).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian

from tests.support.api_server import CLASSES
from tests.support.chest import save_chest_model
from tests.support.dicom_factory import PATIENT_ID, PATIENT_NAME, make_dataset, to_bytes
from tests.support.images import png_bytes

pytestmark = pytest.mark.integration

CHEST_MODEL = "dicom-chest"


def shipped(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data missing?)")
    return Path(path).read_bytes()


def generated(
    modality: str = "CR",
    body_part: str | None = "CHEST",
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> bytes:
    """A small 12-bit grayscale image with patient values a test checks never leak."""
    pixels = np.random.default_rng(0).integers(0, 4096, (24, 20), np.uint16)
    ds = make_dataset(
        pixels, bits_stored=12, Modality=modality, WindowCenter=2048, WindowWidth=4096
    )
    if body_part is not None:
        ds.BodyPartExamined = body_part
    if transfer_syntax != ExplicitVRLittleEndian:  # encapsulated bytes no decoder here reads
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        ds.PixelData = encapsulate([bytes(64)])
        ds["PixelData"].VR = "OB"
    return to_bytes(ds, implicit_vr=False, little_endian=True)


@pytest.fixture(scope="module")
def chest_model(live_server) -> str:
    """An untrained 32-px baseline declared for CR/DX chest images, in the server's store."""
    from training.store import ModelStore

    if not ModelStore(live_server.store_dir).versions(CHEST_MODEL):
        save_chest_model(live_server.store_dir, CHEST_MODEL, CLASSES)
    return CHEST_MODEL


def post(
    client: httpx.Client, route: str, data: bytes, query: dict | None = None, **fields
) -> httpx.Response:
    fields.setdefault("models", "derm-baseline")
    files = {"image": ("image.dcm", data, "application/dicom")}
    return client.post(route, params=query, files=files, data=fields)


def post_json(client: httpx.Client, route: str, data: bytes, **members) -> httpx.Response:
    members.setdefault("models", ["derm-baseline"])
    body = {"image_base64": base64.b64encode(data).decode(), **members}
    return client.post(route, json=body)


def refused(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    for word in words:
        assert word in detail, detail
    assert PATIENT_NAME.split("^")[0] not in response.text and PATIENT_ID not in response.text
    return detail


# --- what decodes ----------------------------------------------------------------------------


def test_predict_compressed_dicom_names_model_and_echoes_the_sop_instance(client):
    data = shipped("MR_small_jpeg_ls_lossless.dcm")
    response = post(client, "/predict", data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {
        "format": "dicom",
        "width": 64,
        "height": 64,
        "frames": 1,
        "dicom": {
            "sop_instance_uid": dcmread(io.BytesIO(data)).SOPInstanceUID,
            "modality": "MR",
            "body_part_examined": None,
        },
    }
    (prediction,) = body["predictions"]
    assert prediction["model"] == "derm-baseline" and prediction["version"] == 1
    assert len(prediction["weights_sha256"]) == 64
    assert sum(prediction["probabilities"].values()) == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_predict_json_base64_dicom(client, name):
    response = post_json(client, "/predict", shipped(name))
    assert response.status_code == 200, response.text
    assert response.json()["image"]["format"] == "dicom"


def test_explain_dicom_json_and_multipart(client):
    data = shipped("CT_small.dcm")
    response = post_json(client, "/explain", data, method="gradcam")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"]["dicom"]["modality"] == "CT"
    (explanation,) = body["explanations"]
    assert explanation["model"] == "derm-baseline" and explanation["overlays"]["gradcam"]
    panel = post(client, "/explain", data, query={"format": "png"})
    assert panel.status_code == 200, panel.text
    assert panel.content.startswith(b"\x89PNG") and panel.headers["X-Model"] == "derm-baseline"


def test_multi_frame_first_frame_or_refusal(client):
    data = shipped("emri_small.dcm")
    first = post(client, "/predict", data)
    assert first.status_code == 200, first.text
    assert first.json()["image"]["frames"] == 10
    refused(post(client, "/predict", data, multiframe="refuse"), 422, "10 frames")
    refused(post_json(client, "/explain", data, multiframe="refuse"), 422, "10 frames")
    invalid = post(client, "/predict", data, multiframe="all")  # not an option
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == [
        "body",
        "multiframe",
    ]


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/predict", "/explain"])
def test_refusals_say_why(client, route):
    refused(post(client, route, shipped("rtplan.dcm")), 422, "no pixel data", "RT Plan")
    refused(post(client, route, generated(transfer_syntax="1.2.840.10008.1.2.4.100")), 415, "MPEG2")
    private = "1.2.826.0.1.3680043.9.9999.77"
    refused(post(client, route, generated(transfer_syntax=private)), 415, private)
    refused(post(client, route, shipped("MR_truncated.dcm")), 400, "pixel data", "less than")
    noise = bytes(128) + b"DICM" + np.random.default_rng(1).bytes(400)
    refused(post(client, route, noise), 400, "DICOM")
    # a real dataset saved without File Meta Information: not sniffed as DICOM at all
    refused(post(client, route, shipped("ExplVR_LitEndNoMeta.dcm")), 415, "not an image")


def cut_inside_pixel_data(data: bytes) -> bytes:
    """The file cut half-way through its Pixel Data value."""
    start = dcmread(io.BytesIO(data)).get_item("PixelData").value_tell
    return data[: start + (len(data) - start) // 2]


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")  # pydicom's note
def test_truncated_compressed_and_multi_frame_files_are_400(client):
    """pydicom reads a file cut inside encapsulated pixel data as an empty dataset; that is a
    corrupt file (400), not a valid one "without pixel data" (422)."""
    for name in (
        "JPEG2000.dcm",
        "JPGLosslessP14SV1_1s_1f_8b.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
    ):
        cut = cut_inside_pixel_data(shipped(name))
        refused(post(client, "/predict", cut), 400, "corrupt DICOM", "truncated")
    header_cut = shipped("JPEG2000.dcm")[:1000]
    refused(post_json(client, "/explain", header_cut), 400, "corrupt DICOM", "truncated")
    native_multi_frame = shipped("emri_small.dcm")[:-1000]
    refused(post(client, "/predict", native_multi_frame), 400, "pixel data", "less than")


@pytest.mark.parametrize(
    ("attributes", "named"),
    [
        ({"RescaleSlope": "NaN", "RescaleIntercept": "0"}, "Rescale Slope NaN"),
        ({"RescaleSlope": "1", "RescaleIntercept": "-inf"}, "Intercept -inf"),
        ({"WindowCenter": "NaN", "WindowWidth": "4096"}, "Window Center nan"),
        ({"WindowCenter": "2048", "WindowWidth": "inf"}, "Width inf"),
    ],
    ids=["slope-nan", "intercept-minus-inf", "centre-nan", "width-inf"],
)
@pytest.mark.parametrize("route", ["/predict", "/explain"])
@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_non_finite_rescale_or_window_is_422(client, route, attributes, named):
    """Used to render one flat grey (all black) and still answer 200 with a prediction."""
    pixels = np.random.default_rng(0).integers(0, 4096, (24, 20), np.uint16)
    data = to_bytes(make_dataset(pixels, bits_stored=12, **attributes))
    refused(post(client, route, data), 422, "not finite", named)


def test_truncated_generated_file_carries_no_patient_values(client):
    data = generated()
    refused(post(client, "/predict", data[:-100]), 400, "DICOM")


# --- what the model accepts ------------------------------------------------------------------


def test_modality_mismatch_is_422_naming_both_sides(client, chest_model):
    ct = shipped("CT_small.dcm")
    detail = refused(
        post(client, "/predict", ct, models=chest_model),
        422,
        f"model {chest_model}:1",
        "CR/DX",
        "CHEST",
        "Modality is CT",
        "no Body Part Examined",
        "allow_modality_mismatch",
    )
    assert "derm" not in detail
    refused(post_json(client, "/explain", ct, models=[chest_model]), 422, "CR/DX")
    # next to a model that accepts anything, the chest model still refuses
    refused(post(client, "/predict", ct, models=f"derm-baseline,{chest_model}"), 422, chest_model)


def test_override_runs_it_anyway_in_both_forms(client, chest_model):
    ct = shipped("CT_small.dcm")
    for response in (
        post(client, "/predict", ct, models=chest_model, allow_modality_mismatch="true"),
        post_json(client, "/predict", ct, models=[chest_model], allow_modality_mismatch=True),
        post(client, "/explain", ct, models=chest_model, allow_modality_mismatch="true"),
        post_json(client, "/explain", ct, models=[chest_model], allow_modality_mismatch=True),
    ):
        assert response.status_code == 200, response.text


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # lower case, as files carry it
def test_a_matching_file_and_non_dicom_need_no_override(client, chest_model):
    assert post(client, "/predict", generated("DX", "chest"), models=chest_model).status_code == 200
    assert post(client, "/predict", png_bytes(), models=chest_model).status_code == 200
    refused(
        post(client, "/predict", generated("CR", None), models=chest_model),
        422,
        "no Body Part Examined",
    )
    refused(
        post(client, "/predict", generated("CR", "EXTREMITY"), models=chest_model),
        422,
        "Body Part Examined is EXTREMITY",
    )


# --- documentation and logs ------------------------------------------------------------------


def test_openapi_documents_the_dicom_fields(client):
    schema = client.get("/openapi.json").json()
    for route in ("/predict", "/explain"):
        content = schema["paths"][route]["post"]["requestBody"]["content"]
        multipart = content["multipart/form-data"]["schema"]["properties"]
        assert multipart["allow_modality_mismatch"]["type"] == "boolean"
        assert multipart["multiframe"]["enum"] == ["first", "refuse"]
        json_ref = content["application/json"]["schema"]
        json_schema = (
            json_ref
            if "properties" in json_ref
            else schema["components"]["schemas"][json_ref["$ref"].rsplit("/", 1)[1]]
        )
        assert {"allow_modality_mismatch", "multiframe"} <= set(json_schema["properties"])
        assert {"415", "422"} <= set(schema["paths"][route]["post"]["responses"])


def test_no_patient_values_in_the_server_log(client, live_server, chest_model):
    for data in (generated(), generated("CT"), generated()[:-50]):
        post(client, "/predict", data, models=chest_model)
    log = live_server.log_tail(1_000_000)
    assert PATIENT_NAME.split("^")[0] not in log and PATIENT_ID not in log
