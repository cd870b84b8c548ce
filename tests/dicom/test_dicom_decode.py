"""``training.dicom``: real files no one here wrote, checked against pydicom's own pipeline.

The reference for every file is computed here, independently of ``dicom_to_image``: the whole
pixel array from ``Dataset.pixel_array``, then ``apply_modality_lut`` and ``apply_voi_lut``
(whose output range pydicom documents), scaled to 0–255, inverted for MONOCHROME1. Generated
files (``dicom_factory``) cover what no shipped file does.
"""

from __future__ import annotations

import csv
import io
import os
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import RLELossless

from tests.support.dicom_factory import PATIENT_ID, PATIENT_NAME, make_dataset, make_dicom, to_bytes
from training.dicom import (
    CorruptPixelDataError,
    DicomInputError,
    MultiFrameRefusedError,
    NonFiniteValueError,
    NoPixelDataError,
    NotDicomError,
    UnsupportedPixelFormatError,
    UnsupportedTransferSyntaxError,
    dicom_to_image,
    read_dicom,
)
from training.preprocess import PreprocessConfig, decode_image_bytes, prepare_image, read_image

# ---------------------------------------------------------------------------------------------
# the independent reference


def shipped_file(name: str) -> str:
    """A file from pydicom's wheel or the pydicom-data package, never downloaded."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data missing?)")
    return str(path)


def window_output_range(ds: Dataset) -> tuple[float, float]:
    """The output range pydicom's ``apply_windowing`` documents: the stored bit range, through
    the Modality LUT's bit depth or the rescale when present."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** ds.ModalityLUTSequence[0].LUTDescriptor[2] - 1)
    bits = int(ds.BitsStored)
    low, high = (
        (0, 2**bits - 1)
        if ds.PixelRepresentation == 0
        else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        low, high = low * slope + intercept, high * slope + intercept
    return float(low), float(high)


def reference_image(ds: Dataset) -> np.ndarray:
    """What a viewer shows for frame 0, float (H, W) or (H, W, 3) on 0–255."""
    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    photometric = ds.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        return rgb.astype(np.float64) * 255 / np.iinfo(rgb.dtype).max
    if pixels.ndim == 3:  # colour: Dataset.pixel_array already converted YBR to RGB
        return pixels.astype(np.float64) * 255 / (2 ** int(ds.BitsStored) - 1)
    values = apply_modality_lut(pixels, ds)
    if ds.get("VOILUTSequence"):
        out = apply_voi_lut(values, ds, index=0).astype(np.float64)
        unit = out / (2 ** ds.VOILUTSequence[0].LUTDescriptor[2] - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        low, high = window_output_range(ds)
        unit = (apply_voi_lut(values, ds, index=0) - low) / (high - low)
    else:
        values = values.astype(np.float64)
        unit = (values - values.min()) / (values.max() - values.min())
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return unit * 255.0


def assert_matches_reference(image: np.ndarray, ds: Dataset, atol: float = 1.0) -> None:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    expected = reference_image(ds)
    if expected.ndim == 2:
        assert (image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all()
        image = image[:, :, 0]
    assert image.shape == expected.shape
    np.testing.assert_allclose(image.astype(np.float64), expected, atol=atol)


# ---------------------------------------------------------------------------------------------
# real files: the shared data directory (every file in its manifest)


def _samples_dir() -> Path:
    configured = os.environ.get("MEDROBUST_DATA_DIR")
    root = (
        Path(configured) if configured else Path(__file__).resolve().parents[3] / "shared" / "data"
    )
    return root / "dicom_samples"


def _manifest_rows() -> list:
    manifest = _samples_dir() / "manifest.csv"
    if not manifest.is_file():
        reason = f"{manifest} not found: set MEDROBUST_DATA_DIR to run the real-sample tests"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-data")]
    with manifest.open(newline="") as handle:
        return [pytest.param(row, id=row["file"]) for row in csv.DictReader(handle)]


@pytest.mark.data
@pytest.mark.parametrize("row", _manifest_rows())
def test_every_shared_sample_renders_like_pydicom(row):
    ds = read_dicom(_samples_dir() / row["file"])
    assert ds.Modality == row["modality"]
    assert ds.PhotometricInterpretation == row["photometric"]
    assert ds.file_meta.TransferSyntaxUID.name == row["transfer_syntax"]
    image = dicom_to_image(ds)
    assert image.shape == (int(row["rows"]), int(row["columns"]), 3)
    assert_matches_reference(image, ds)
    if int(row["frames"]) > 1:
        with pytest.raises(MultiFrameRefusedError, match=f"{row['frames']} frames"):
            dicom_to_image(ds, frame="refuse")


# ---------------------------------------------------------------------------------------------
# real files: pydicom's own test files (its wheel and pydicom-data)

REAL_FILES = [
    "CT_small.dcm",  # rescale slope/intercept, signed
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS + a window
    "JPEG2000.dcm",
    "JPGExtended.dcm",  # JPEG extended 12-bit
    "JPEG-LL.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "JPEGLSNearLossless_16.dcm",
    "image_dfl.dcm",  # deflated
    "emri_small.dcm",  # 10 frames
    "emri_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "vlut_04.dcm",  # VOI LUT sequence
    "mlut_18.dcm",  # Modality LUT sequence
    "MR2_J2KR.dcm",  # JPEG 2000 lossless + window
    "RG3_J2KR.dcm",  # MONOCHROME1 JPEG 2000 + window
    "rtdose_1frame.dcm",
    "SC_rgb.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_16bit.dcm",
    "SC_rgb_expb.dcm",
    "SC_rgb_2frame.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",  # YBR_FULL in JPEG baseline
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_jls_lossy_line.dcm",
    "SC_ybr_full_uncompressed.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "US1_J2KR.dcm",  # YBR_RCT
    "ExplVR_BigEnd.dcm",  # RGB, planar configuration 1, big endian
    "color3d_jpeg_baseline.dcm",  # YBR_FULL_422 JPEG, 120 frames
    "OBXXXX1A.dcm",  # PALETTE COLOR
    "examples_palette.dcm",
]


@pytest.mark.parametrize("name", REAL_FILES)
def test_pydicom_test_file_renders_like_pydicom(name):
    path = shipped_file(name)
    assert_matches_reference(dicom_to_image(read_dicom(path)), pydicom.dcmread(path))


def test_monochrome1_chest_is_inverted_lungs_dark():
    """RG1 is a CR chest stored MONOCHROME1 (high values dark): rendered, the air-filled lungs
    must be darker than the mediastinum and spine between them. Without the inversion the
    lungs would come out the brighter."""
    image = dicom_to_image(read_dicom(shipped_file("RG1_UNCR.dcm")))[:, :, 0].astype(float)
    height, width = image.shape

    def mean(y0: float, y1: float, x0: float, x1: float) -> float:
        return image[int(y0 * height) : int(y1 * height), int(x0 * width) : int(x1 * width)].mean()

    left, right = mean(0.3, 0.6, 0.2, 0.4), mean(0.3, 0.6, 0.6, 0.8)
    mediastinum = mean(0.3, 0.6, 0.45, 0.55)
    assert mediastinum > left + 40 and mediastinum > right + 40, (left, right, mediastinum)


def _rgb(name: str) -> np.ndarray:
    return dicom_to_image(read_dicom(shipped_file(name))).astype(np.int16)


@pytest.mark.parametrize(
    ("name", "max_mean_error", "max_error"),
    [
        ("SC_rgb_rle.dcm", 0, 0),  # RLE of the same RGB pixels: lossless
        ("SC_rgb_2frame.dcm", 0, 0),  # its first frame is SC_rgb's image
        ("SC_rgb_jpeg_gdcm.dcm", 0, 0),  # RGB in JPEG, no colour transform
        ("SC_ybr_full_uncompressed.dcm", 1, 8),  # YBR_FULL: 8-bit YCbCr quantisation only
        ("SC_ybr_full_422_uncompressed.dcm", 1, 8),  # + chroma subsampling of flat bars
        ("SC_rgb_jpeg_dcmtk.dcm", 2, 16),  # YBR_FULL in lossy JPEG
    ],
)
def test_colour_siblings_match_the_rgb_original(name, max_mean_error, max_error):
    """pydicom ships SC_rgb in several encodings: after conversion to RGB each must show the
    original's colour bars (unconverted YCbCr would be off by ~100 levels on pure red)."""
    original, other = _rgb("SC_rgb.dcm"), _rgb(name)
    assert tuple(original[0, 50]) == (255, 0, 0)  # the first bar is pure red
    error = np.abs(original - other)
    assert error.mean() <= max_mean_error and error.max() <= max_error, (error.mean(), error.max())


def test_ybr_rct_jpeg2000_is_the_rgb_image_exactly():
    """US1_J2KR is US1_UNCR (RGB) in lossless JPEG 2000 with a reversible colour transform."""
    np.testing.assert_array_equal(_rgb("US1_J2KR.dcm"), _rgb("US1_UNCR.dcm"))


def test_enhanced_ct_uses_the_functional_groups():
    """eCT_Supplemental keeps its rescale (−1024) and window (49/102) only in the shared
    functional groups; the first frame must be rendered with them (LINEAR window, by hand)."""
    path = shipped_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array[0].astype(np.float64) * 1.0 - 1024.0
    c, w = 49.0 - 0.5, 102.0 - 1.0
    expected = np.clip((hu - c) / w + 0.5, 0, 1) * 255
    image = dicom_to_image(read_dicom(path))
    np.testing.assert_allclose(image[:, :, 0], expected, atol=1)
    assert 0 < (image[:, :, 0] == 255).mean() < 1  # a narrow window: bone saturates, not all


def test_first_frame_of_a_multi_frame_file_or_a_refusal():
    ds = read_dicom(shipped_file("emri_small.dcm"))
    with pytest.raises(MultiFrameRefusedError, match="10 frames"):
        dicom_to_image(ds, frame="refuse")
    assert_matches_reference(dicom_to_image(ds, frame="first"), ds)


def test_single_frame_is_never_refused():
    ds = read_dicom(shipped_file("CT_small.dcm"))
    assert dicom_to_image(ds, frame="refuse").shape == (128, 128, 3)


# ---------------------------------------------------------------------------------------------
# generated files: windowing, LUTs, rescale, layout


def _gray(pixels: np.ndarray, **attributes) -> np.ndarray:
    image = dicom_to_image(read_dicom(make_dicom(pixels, **attributes)))
    assert (image[:, :, 0] == image[:, :, 2]).all()
    return image[:, :, 0]


RAMP = np.arange(0, 400, dtype=np.uint16).reshape(20, 20)


def test_linear_window_values_at_the_edges_and_centre():
    image = _gray(RAMP, WindowCenter=100, WindowWidth=51, BitsStored=12).ravel()
    # PS3.3 C.11.2.1.2.1: x <= c - 0.5 - (w-1)/2 → min, x > c - 0.5 + (w-1)/2 → max
    assert (image[RAMP.ravel() <= 74.5] == 0).all()
    assert (image[RAMP.ravel() > 124.5] == 255).all()
    assert image[100] == round(((100 - 99.5) / 50 + 0.5) * 255)  # 130
    assert_matches_reference(
        dicom_to_image(read_dicom(make_dicom(RAMP, WindowCenter=100, WindowWidth=51))),
        make_dataset(RAMP, WindowCenter=100, WindowWidth=51),
    )


def test_first_of_several_windows_is_used():
    several = _gray(RAMP, WindowCenter=[100, 300], WindowWidth=[51, 20])
    np.testing.assert_array_equal(several, _gray(RAMP, WindowCenter=100, WindowWidth=51))


def test_width_one_window_is_a_threshold():
    image = _gray(RAMP, WindowCenter=200, WindowWidth=1)
    np.testing.assert_array_equal(image, np.where(RAMP > 199.5, 255, 0))


@pytest.mark.parametrize("width", [0, -5])
def test_unusable_window_falls_back_to_min_max(width):
    np.testing.assert_array_equal(_gray(RAMP, WindowCenter=100, WindowWidth=width), _gray(RAMP))
    assert _gray(RAMP)[0, 0] == 0 and _gray(RAMP)[-1, -1] == 255


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_other_voi_lut_functions_match_pydicom(function):
    attributes = {"WindowCenter": 150, "WindowWidth": 80, "VOILUTFunction": function}
    image = dicom_to_image(read_dicom(make_dicom(RAMP, **attributes)))
    assert_matches_reference(image, make_dataset(RAMP, **attributes))


def test_ct_window_on_hounsfield_units():
    """Stored values 0..4095 with intercept −1024: a 40/400 soft-tissue window is set in HU."""
    stored = np.arange(0, 4096, 16, dtype=np.int16).reshape(16, 16)
    attributes = {
        "RescaleSlope": 1,
        "RescaleIntercept": -1024,
        "WindowCenter": 40,
        "WindowWidth": 400,
    }
    image = _gray(stored, **attributes)
    hu = stored.astype(float) - 1024
    assert (image[hu <= -160] == 0).all() and (image[hu > 240] == 255).all()
    middle = (hu > -100) & (hu < 200)
    assert ((image[middle] > 0) & (image[middle] < 255)).all()
    assert_matches_reference(
        dicom_to_image(read_dicom(make_dicom(stored, **attributes))),
        make_dataset(stored, **attributes),
    )


def test_negative_rescale_slope_is_applied_before_min_max():
    """Without a window the min–max is of the *modality* values: a slope of −1 flips them."""
    pixels = np.arange(100, 500, dtype=np.uint16).reshape(20, 20)
    flipped = _gray(pixels, RescaleSlope=-1, RescaleIntercept=0)
    np.testing.assert_array_equal(flipped, 255 - _gray(pixels))


def test_voi_lut_sequence_wins_over_the_window():
    """An inverting 8-bit VOI LUT starting at stored value 100, with a window also present."""
    item = Dataset()
    item.LUTDescriptor = [256, 100, 8]
    item.add_new("LUTData", "US", list(range(255, -1, -1)))
    pixels = np.arange(0, 512, dtype=np.uint16).reshape(16, 32)
    image = _gray(pixels, VOILUTSequence=[item], WindowCenter=10, WindowWidth=5)
    expected = 255 - np.clip(pixels.astype(int) - 100, 0, 255)  # below → entry 0, above → last
    np.testing.assert_array_equal(image, expected)


def test_monochrome1_is_the_inverse_of_monochrome2():
    gray2 = _gray(RAMP, WindowCenter=150, WindowWidth=100)
    gray1 = _gray(RAMP, WindowCenter=150, WindowWidth=100, photometric="MONOCHROME1")
    np.testing.assert_array_equal(gray1, 255 - gray2)


def test_planar_configuration_is_undone():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    for planar in (0, 1):
        image = dicom_to_image(read_dicom(make_dicom(rgb, planar=planar)))
        np.testing.assert_array_equal(image, rgb)


def test_12_bit_rgb_is_scaled_by_bits_stored():
    rgb = np.full((4, 4, 3), 4095, dtype=np.uint16)
    rgb[0, 0] = (0, 2048, 4095)
    image = dicom_to_image(read_dicom(make_dicom(rgb, bits_stored=12)))
    assert tuple(image[0, 0]) == (0, 128, 255) and (image[1:] == 255).all()


def test_signed_pixels_and_a_constant_image():
    signed = np.array([[-1000, 0], [500, 1000]], dtype=np.int16)
    np.testing.assert_array_equal(_gray(signed), [[0, 128], [191, 255]])
    assert (_gray(np.full((4, 4), 7, dtype=np.uint16)) == 0).all()


def test_prepare_image_takes_the_rendered_dicom():
    image = dicom_to_image(read_dicom(shipped_file("CT_small.dcm")))
    prepared = prepare_image(image, PreprocessConfig(input_size=32))
    assert prepared.shape == (32, 32, 3) and prepared.dtype == np.float32
    assert prepared.min() >= 0 and prepared.max() <= 255


# ---------------------------------------------------------------------------------------------
# refusals


def test_unsupported_transfer_syntax_names_it():
    ds = make_dataset(np.zeros((8, 8), np.uint8))
    ds.PixelData = encapsulate([bytes(64)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder exists
    with pytest.raises(
        UnsupportedTransferSyntaxError, match=r"MPEG2.*1\.2\.840\.10008\.1\.2\.4\.100"
    ):
        dicom_to_image(read_dicom(to_bytes(ds)))
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.9.9999.77"  # a made-up private one
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True, enforce_file_format=True)
    with pytest.raises(
        UnsupportedTransferSyntaxError, match="1.2.826.0.1.3680043.9.9999.77"
    ) as info:
        dicom_to_image(read_dicom(buffer.getvalue()))
    assert info.value.uid == "1.2.826.0.1.3680043.9.9999.77"


def test_no_pixel_data():
    with pytest.raises(NoPixelDataError, match="RT Plan Storage"):
        dicom_to_image(read_dicom(shipped_file("rtplan.dcm")))
    ds = make_dataset(np.zeros((4, 4), np.uint8))
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    with pytest.raises(NoPixelDataError, match=r"no pixel data.*Basic Text SR"):
        dicom_to_image(read_dicom(to_bytes(ds)))


def test_image_sop_class_without_pixel_data_is_corrupt():
    """The Image Pixel module is mandatory in an image IOD: a Secondary Capture *image* that
    holds none was cut short (e.g. exactly before its Pixel Data element), not a non-image."""
    ds = make_dataset(np.zeros((4, 4), np.uint8))
    del ds.PixelData
    with pytest.raises(CorruptPixelDataError, match="Secondary Capture Image Storage"):
        dicom_to_image(read_dicom(to_bytes(ds)))


# Compressed (encapsulated, undefined-length) pixel data, single- and multi-frame, in each
# codec family: pydicom reads a file cut inside it as an *empty* dataset, without raising.
COMPRESSED = [
    "JPEG2000.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "emri_small_jpeg_2k_lossless.dcm",  # 10 frames
    "SC_rgb_rle_2frame.dcm",
]


def cut_inside_pixel_data(path: str) -> bytes:
    """The file cut half-way through its Pixel Data value."""
    data = Path(path).read_bytes()
    start = pydicom.dcmread(path).get_item("PixelData").value_tell
    return data[: start + (len(data) - start) // 2]


@pytest.mark.parametrize("name", COMPRESSED)
@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")  # pydicom's note
def test_compressed_file_cut_inside_its_pixel_data_is_corrupt(name):
    data = cut_inside_pixel_data(shipped_file(name))
    with pytest.raises(CorruptPixelDataError, match="truncated"):
        dicom_to_image(read_dicom(data))


@pytest.mark.parametrize(
    "name", ["JPEG2000.dcm", "emri_small_jpeg_2k_lossless.dcm", "CT_small.dcm"]
)
def test_image_cut_inside_its_header_is_corrupt(name):
    """Cut before the pixel data: inside a value (which pydicom returns short), or inside an
    element's tag and length (which pydicom takes for the end of the dataset)."""
    data = Path(shipped_file(name)).read_bytes()
    start = pydicom.dcmread(io.BytesIO(data)).get_item("PixelData").value_tell
    # in the Pixel Data element's tag and length; in the value before it; mid-header
    for cut in (start - 6, start - 13, (start + 132) // 2):
        with pytest.raises(CorruptPixelDataError, match="truncated"):
            dicom_to_image(read_dicom(data[:cut]))


def test_native_multi_frame_cut_in_a_later_frame_is_corrupt():
    """Only frame 0 is decoded, but the pixel data must still be as long as the header says."""
    data = Path(shipped_file("emri_small.dcm")).read_bytes()
    with pytest.raises(CorruptPixelDataError, match="less than expected"):
        dicom_to_image(read_dicom(data[: len(data) - 1000]))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, world",
        b"\x89PNG\r\n\x1a\n" + bytes(200),
        bytes(128) + b"DICM",  # the marker and nothing after it
        bytes(128) + b"DICM" + np.random.default_rng(0).bytes(500),
    ],
    ids=["empty", "text", "png", "marker-only", "marker-then-noise"],
)
def test_not_dicom(data):
    with pytest.raises(NotDicomError):
        read_dicom(data)


def test_dataset_without_file_meta_is_refused():
    """pydicom ships a real dataset written without preamble and File Meta Information: its
    encoding could only be guessed, so it is refused."""
    with pytest.raises(NotDicomError, match="File Meta Information"):
        read_dicom(shipped_file("ExplVR_LitEndNoMeta.dcm"))


def test_missing_preamble_with_file_meta_is_read():
    data = Path(shipped_file("CT_small.dcm")).read_bytes()
    np.testing.assert_array_equal(
        dicom_to_image(read_dicom(data[128:])), dicom_to_image(read_dicom(data))
    )


def test_truncated_pixel_data_is_corrupt():
    with pytest.raises(CorruptPixelDataError, match="less than expected"):
        dicom_to_image(read_dicom(shipped_file("MR_truncated.dcm")))


def test_rle_segment_that_overruns_its_frame_is_corrupt_not_a_panic():
    """pylibjpeg-rle panics (pyo3's PanicException, a BaseException) on an RLE segment that
    decodes to more bytes than its frame holds; that must come out as a refusal, not escape."""
    pytest.importorskip("rle")  # the plugin that panics
    ds = make_dataset(np.zeros((4, 4), np.uint16), transfer_syntax=RLELossless)
    whole = bytes([0xF1, 0])  # replicate 0 sixteen times: one byte plane of the 4 x 4 frame
    overrun = whole + bytes([0xFF, 0])  # and two bytes more
    header = struct.pack("<16L", 2, 64, 64 + len(overrun), *([0] * 13))
    ds.PixelData = encapsulate([header + overrun + whole])
    ds["PixelData"].VR = "OB"
    with pytest.raises(CorruptPixelDataError, match="RLE Lossless"):
        dicom_to_image(read_dicom(to_bytes(ds)))


@pytest.mark.parametrize(
    ("slope", "intercept"),
    [("NaN", "0"), ("inf", "0"), ("1", "-inf"), ("1", "nan"), ("1e400", "0"), ("1e308", "0")],
    ids=[
        "slope-nan",
        "slope-inf",
        "intercept-minus-inf",
        "intercept-nan",
        "slope-overflows",
        "values-overflow",
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # pydicom's note on NaN / inf
def test_rescale_that_is_not_finite_is_refused(slope, intercept):
    """NaN / inf (or a finite slope that takes the ramp past float64) used to render an
    all-black image that a model still answered for."""
    data = make_dicom(RAMP, RescaleSlope=slope, RescaleIntercept=intercept)
    with pytest.raises(NonFiniteValueError, match="not finite"):
        dicom_to_image(read_dicom(data))


@pytest.mark.parametrize(
    ("centre", "width"),
    [("NaN", "50"), ("100", "inf"), ("-inf", "50"), ("100", "NaN")],
    ids=["centre-nan", "width-inf", "centre-minus-inf", "width-nan"],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_window_that_is_not_finite_is_refused(centre, width):
    """Unlike a width the VOI function does not allow (min–max fallback above), a window
    that is not a number at all is refused: the file's display intent is unknowable."""
    data = make_dicom(RAMP, WindowCenter=centre, WindowWidth=width)
    with pytest.raises(NonFiniteValueError, match="Window Center"):
        dicom_to_image(read_dicom(data))


def test_rescale_slope_that_is_not_a_number_is_corrupt():
    ds = make_dataset(np.zeros((4, 4), np.uint16), RescaleSlope="7.5", RescaleIntercept="0")
    data = to_bytes(ds).replace(b"7.5 ", b"abc ")  # as an untrusted file may hold it
    with pytest.raises(CorruptPixelDataError, match="Rescale Slope / Intercept"):
        dicom_to_image(read_dicom(data))


def test_modality_lut_without_its_data_is_corrupt():
    lut = Dataset()
    lut.LUTDescriptor, lut.ModalityLUTType = [16, 0, 16], "HU"
    ds = make_dataset(np.zeros((4, 4), np.uint16), ModalityLUTSequence=[lut])
    with pytest.raises(CorruptPixelDataError, match="Modality LUT"):
        dicom_to_image(read_dicom(to_bytes(ds)))


@pytest.mark.parametrize(
    ("descriptor", "data"),
    [([4, 0], [0, 1, 2, 3]), ([4], [0, 1, 2, 3]), ([4, 0, 16], [])],
    ids=["two-value-descriptor", "one-value-descriptor", "empty-data"],
)
def test_malformed_voi_lut_is_refused(descriptor, data):
    lut = Dataset()
    lut["LUTDescriptor"] = pydicom.DataElement(0x00283002, "US", descriptor)
    lut["LUTData"] = pydicom.DataElement(0x00283006, "US", data)
    ds = make_dataset(np.zeros((4, 4), np.uint16), VOILUTSequence=[lut])
    with pytest.raises(UnsupportedPixelFormatError, match="VOI LUT"):
        dicom_to_image(read_dicom(to_bytes(ds)))


def test_errors_carry_no_patient_values():
    ds = make_dataset(np.zeros((6, 6), np.uint16))
    cases = [to_bytes(ds)[:-30]]
    del ds.PixelData
    cases.append(to_bytes(ds))
    for data in cases:
        with pytest.raises(DicomInputError) as info:
            dicom_to_image(read_dicom(data))
        assert PATIENT_NAME.split("^")[0] not in str(info.value)
        assert PATIENT_ID not in str(info.value)


# ---------------------------------------------------------------------------------------------
# training's image reader goes through the same decoder


def test_read_image_renders_dicom_files():
    path = shipped_file("MR_small_jpeg_ls_lossless.dcm")
    np.testing.assert_array_equal(read_image(path), dicom_to_image(read_dicom(path)))


def test_decode_image_bytes_names_the_source_of_a_bad_dicom():
    data = Path(shipped_file("rtplan.dcm")).read_bytes()
    with pytest.raises(ValueError, match="plan.dcm.*no pixel data"):
        decode_image_bytes(data, source="plan.dcm")


def test_in_memory_dataset_with_an_ow_voi_lut():
    """Datasets built in memory (as the PACS side receives them) render too; a VOI LUT stored
    as OW bytes is read with the File Meta's endianness."""
    ds = make_dataset(np.arange(100, dtype=np.uint16).reshape(10, 10))
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.add_new("LUTData", "OW", np.arange(255, -1, -1, dtype="<u2").tobytes())
    ds.VOILUTSequence = [item]
    np.testing.assert_array_equal(dicom_to_image(ds)[:, :, 0], 255 - np.arange(100).reshape(10, 10))
    del ds.file_meta
    with pytest.raises(NotDicomError, match="Transfer Syntax"):
        dicom_to_image(ds)
