"""DICOM result objects for one analysed image: a Comprehensive SR and an RGB Secondary Capture.

Both go into the source's study (its patient and study module values are copied, nothing else),
each in a series of its own, and both say plainly that they are research output, not for
diagnosis. Their UIDs are derived from the source's UIDs and the model's identity (name, version,
weights sha256), never drawn at random: analysing the same image with the same model again
produces the same SOP Instance UIDs, so a PACS keeps one copy instead of piling up duplicates, and
every image of one source series lands in one SR series and one SC series per model.

Only highdicom builds the objects, so the IOD rules it knows (modules, types, SR content tree
constraints) are checked when they are created; ``dciodvfy`` checks them again in the tests.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from training.dicom import DicomInputError, header_value, number_of_frames
from training.model_ref import ModelIdentity

MANUFACTURER = "medrobust"
NOT_FOR_DIAGNOSIS = (
    "Research use only. Produced by a machine learning model; not for diagnosis, not reviewed "
    "by a physician."
)
#: The local coding scheme for a model's classes (DICOM reserves designators starting "99").
CLASS_SCHEME = "99MEDROBUST"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902

#: Patient and General Study module attributes a new instance of the same study must repeat.
#: Type 2 attributes absent from the source are written empty, as the standard allows.
STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
#: What identifies the source image itself (for references), plus the character set its
#: patient values are encoded in.
SOURCE_KEYWORDS = ("SpecificCharacterSet", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID")


@dataclass(frozen=True)
class Finding:
    """An image-level classification: the predicted class and every class's probability.

    ``probabilities`` lists all of the model's classes in the model's order (their position is
    the class index recorded in the SR).
    """

    class_name: str
    probability: float
    probabilities: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.probabilities:
            object.__setattr__(self, "probabilities", {self.class_name: self.probability})
        if self.class_name not in self.probabilities:
            raise ValueError(f"class {self.class_name!r} is not among {list(self.probabilities)}")
        for name, value in self.probabilities.items():
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"probability of {name!r} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class ResultObjects:
    """What one analysed image yields: the SR (finding) and the SC (Grad-CAM overlay)."""

    sr: Dataset
    sc: Dataset


def build_structured_report(
    source: Dataset,
    finding: Finding,
    model: ModelIdentity,
    *,
    series_number: int = SR_SERIES_NUMBER,
) -> Dataset:
    """A Comprehensive SR (TID 1500 Measurement Report) of ``finding`` about ``source``.

    Why Comprehensive SR and TID 1500: it is the SR IOD that viewers and PACS (OHIF, Orthanc,
    dcmtk's ``dsrdump``) read most widely, TID 1500 is the template DICOM defines for
    algorithm results, and highdicom builds and checks it. Comprehensive *3D* SR would add
    nothing here (no 3-D coordinates: the finding is about the whole image).

    Content: the device observer (this service, its model name ``name:version``); one
    measurement group (TID 1501) per class, most probable first, each with the class as finding
    type, its probability (DCM 122157, unit "1"), the algorithm identification (TID 4019: model
    name, version, ``weights_sha256=...`` as a parameter) and the source image reference; the
    predicted class's group also carries it as a qualitative evaluation (SCT "Classification");
    and a root comment stating the finding, the model and that this is not for diagnosis (TID
    1500 is extensible). The source's Study/Series/SOP Instance UIDs are also recorded as
    evidence.
    """
    header = _source_header(source)
    algorithm = hd.sr.AlgorithmIdentification(
        name=model.name,
        version=str(model.version),
        parameters=[f"weights_sha256={model.weights_sha256}"],
        manufacturer=MANUFACTURER,
    )
    reference = hd.sr.SourceImageForMeasurementGroup(
        header.SOPClassUID, header.SOPInstanceUID, _analysed_frames(source)
    )
    groups = []
    ranked = sorted(
        enumerate(finding.probabilities.items()), key=lambda item: item[1][1], reverse=True
    )
    for index, (name, probability) in ranked:
        concept = _class_concept(index, name)
        predicted = name == finding.class_name
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=_uid("tracking", header.SOPInstanceUID, *_model_parts(model), name),
                    identifier=f"{model.key} class {name}",
                ),
                finding_type=concept,
                algorithm_id=algorithm,
                measurements=[
                    hd.sr.Measurement(
                        name=codes.DCM.Probability, value=probability, unit=codes.UCUM.NoUnits
                    )
                ],
                qualitative_evaluations=(
                    [hd.sr.QualitativeEvaluation(name=codes.SCT.Classification, value=concept)]
                    if predicted
                    else None
                ),
                source_images=[reference],
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid("device", *_model_parts(model)),
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=model.key[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    report[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=codes.DCM.Comment,
            value=(
                f"Predicted class: {finding.class_name} (probability {finding.probability:.4f}) "
                f"by {model.describe()}. {NOT_FOR_DIAGNOSIS}"
            ),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[_without_study_values(header)],
        content=report[0],
        series_instance_uid=_uid("sr-series", header.SeriesInstanceUID, *_model_parts(model)),
        series_number=series_number,
        sop_instance_uid=_uid("sr", header.SOPInstanceUID, *_model_parts(model)),
        instance_number=_instance_number(source),
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=_series_description("AI finding"),
    )
    _copy_study(header, sr)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = CLASS_SCHEME
    scheme.CodingSchemeName = "medrobust model class names"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def build_secondary_capture(
    source: Dataset,
    overlay_rgb: np.ndarray,
    model: ModelIdentity,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    series_number: int = SC_SERIES_NUMBER,
) -> Dataset:
    """An RGB Secondary Capture of ``overlay_rgb`` (``(H, W, 3)`` uint8), derived from ``source``.

    Labelled derived in every place a viewer or PACS looks: Image Type ``DERIVED\\SECONDARY``,
    a Derivation Description naming the method, layer and model (with its weights sha256), a
    Source Image Sequence pointing at the source image, a Series Description and Image Comments
    saying it is not for diagnosis. The overlay keeps the source image's geometry (it is drawn
    over the whole image, only scaled), so the source's Patient Orientation still holds and is
    copied; when the source has none it is written empty (Type 2: unknown). Laterality, Burned
    In Annotation and Lossy Image Compression are inherited from the source, whose pixels the
    overlay shows.
    """
    rgb = np.asarray(overlay_rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(
            f"overlay must be an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}"
        )
    header = _source_header(source)
    parts = (*_model_parts(model), method, layer or "")
    sc = hd.sc.SCImage(
        pixel_array=np.ascontiguousarray(rgb),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        # replaced below by the source's own value (or left empty); highdicom requires one here
        patient_orientation=("L", "F"),
        study_instance_uid=header.StudyInstanceUID,
        series_instance_uid=_uid("sc-series", header.SeriesInstanceUID, *parts),
        series_number=series_number,
        sop_instance_uid=_uid("sc", header.SOPInstanceUID, *parts),
        instance_number=_instance_number(source),
        manufacturer=MANUFACTURER,
        specific_character_set=header.get("SpecificCharacterSet"),
        series_description=_series_description(f"{method} overlay"),
    )
    _copy_study(header, sc)
    sc.PatientOrientation = source.get("PatientOrientation", "")
    # the overlay shows the source's body part, so it has the source's laterality; Type 2C:
    # absent for an unpaired part ("U"), empty when unknown. (Body Part Examined is not copied:
    # with it, the condition becomes "absent if unpaired, a value if paired", which would need
    # a table of paired body parts to meet when the source states no laterality.)
    laterality = source.get("Laterality") or source.get("ImageLaterality")
    if laterality != "U":
        sc.Laterality = laterality if laterality in ("L", "R") else ""
    sc.ImageType = ["DERIVED", "SECONDARY"]
    at_layer = f" at layer {layer}" if layer else ""
    sc.DerivationDescription = (
        f"{method} class activation map{at_layer} of {model.describe()}, colour-mapped and "
        "blended over the source image. Not for diagnosis."
    )
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = header.SOPClassUID
    referenced.ReferencedSOPInstanceUID = header.SOPInstanceUID
    if _analysed_frames(source):
        referenced.ReferencedFrameNumber = 1
    sc.SourceImageSequence = [referenced]
    sc.ImageComments = f"{NOT_FOR_DIAGNOSIS} {sc.DerivationDescription}"
    for keyword in ("BurnedInAnnotation", "LossyImageCompression"):
        if keyword in source:
            setattr(sc, keyword, source[keyword].value)
    return sc


def _source_header(source: Dataset) -> Dataset:
    """Only the source's patient/study values and its own UIDs: what the results may repeat."""
    missing = [k for k in ("StudyInstanceUID", *SOURCE_KEYWORDS[1:]) if not source.get(k)]
    if missing:  # a DicomInputError: the PACS paths skip such an instance, as any unusable one
        raise DicomInputError(
            f"the source instance has no {', '.join(missing)}: cannot reference it"
        )
    header = Dataset()
    for keyword in (*SOURCE_KEYWORDS, *STUDY_KEYWORDS):
        if keyword in source:
            header[keyword] = copy.deepcopy(source[keyword])  # never alter the caller's source
        elif keyword in STUDY_KEYWORDS:
            setattr(header, keyword, "")
    return header


def _without_study_values(header: Dataset) -> Dataset:
    """``header`` with the patient/study values blanked, for highdicom's constructors.

    highdicom checks names, dates and sex codes as it copies them, and logs a value it finds
    dubious (a patient name included) or refuses it; a PACS holds plenty of such values. So the
    objects are built blank and :func:`_copy_study` copies the values verbatim afterwards.
    """
    blank = copy.deepcopy(header)
    for keyword in STUDY_KEYWORDS:
        if keyword != "StudyInstanceUID":
            setattr(blank, keyword, "")
    return blank


def _copy_study(header: Dataset, result: Dataset) -> None:
    for keyword in STUDY_KEYWORDS:
        result[keyword] = copy.deepcopy(header[keyword])


def _analysed_frames(source: Dataset) -> list[int] | None:
    """``[1]`` for a multi-frame source (only its first frame is analysed), else ``None``."""
    return [1] if number_of_frames(source) > 1 else None


def _class_concept(index: int, name: str) -> hd.sr.CodedConcept:
    """A model class as a code: its name when it fits a Code Value (16 chars), else its index."""
    value = name if 0 < len(name) <= 16 and "\\" not in name else f"class-{index}"
    return hd.sr.CodedConcept(value=value, scheme_designator=CLASS_SCHEME, meaning=name[:64])


def _model_parts(model: ModelIdentity) -> tuple[str, str, str]:
    return (model.name, str(model.version), model.weights_sha256)


def _uid(*parts: str) -> str:
    """A UID determined by ``parts`` (pydicom hashes them under its own root)."""
    return generate_uid(entropy_srcs=[MANUFACTURER, *parts])


def _instance_number(source: Dataset) -> int:
    """The source's Instance Number, so results sort like their sources; 1 when it has none
    or an unreadable one (an untrusted IS value is not worth refusing the image for)."""
    try:
        return int(header_value(source, "InstanceNumber") or 1)
    except ValueError:
        return 1


def _series_description(what: str) -> str:
    return f"{MANUFACTURER} {what} - NOT FOR DIAGNOSIS"[:64]
