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
from typing import TYPE_CHECKING, Any

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from training.dicom import DicomInputError, header_value, number_of_frames
from training.model_ref import ModelIdentity

if TYPE_CHECKING:  # an annotation only: the DIMSE listener imports this module, not Keras
    from training.trust.answer import CertifiedBound, FlipBound, RobustnessBlock

MANUFACTURER = "medrobust"
NOT_FOR_DIAGNOSIS = (
    "Research use only. Produced by a machine learning model; not for diagnosis, not reviewed "
    "by a physician."
)
#: The local coding scheme for a model's classes (DICOM reserves designators starting "99").
CLASS_SCHEME = "99MEDROBUST"
#: The local coding scheme for the robustness concepts and methods (no standard code names a
#: "smallest flipping perturbation" or a "certified radius").
TRUST_SCHEME = "99MRTRUST"
#: ε and radii are in pixel values on the model's [0, 255] input scale (ε = 2 means 2/255): a
#: UCUM annotation (UCUM has no unit for it), short enough for a plain Code Value (16 chars;
#: longer ones go to Long Code Value, which fewer readers know).
PIXEL_VALUE = hd.sr.CodedConcept(
    value="{pixel_value}",
    scheme_designator="UCUM",
    meaning="pixel value on the 0-255 input scale",
)
#: Version of the robustness methods as recorded in the SR's algorithm identification.
TRUST_METHOD_VERSION = "1"
#: the runtime that computes probabilities when none is named (``training.runtimes.KERAS``)
KERAS_RUNTIME = "keras"
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
class RuntimeIdentity:
    """What computed a finding's probabilities: the serving runtime (``training.runtimes``:
    ``keras``, ``keras-bf16``, ``openvino`` ...) and the sha256 of its converted artefact (None
    for the Keras runtimes, whose weights are the stored model's own)."""

    name: str = KERAS_RUNTIME
    artefact_sha256: str | None = None

    @classmethod
    def of(cls, forward: Any) -> RuntimeIdentity:
        """From a ``training.runtimes.ServingForward`` (duck-typed: no Keras import here)."""
        return cls(forward.runtime, forward.artefact_sha256)

    def parameters(self) -> list[str]:
        """The SR's algorithm parameters that name it, as ``/predict`` answers name it."""
        named = [f"runtime={self.name}"]
        if self.artefact_sha256 is not None:
            named.append(f"runtime_artefact_sha256={self.artefact_sha256}")
        return named

    def describe(self) -> str:
        """``openvino (artefact sha256 …)``, or the bare name for a runtime with no artefact."""
        if self.artefact_sha256 is None:
            return self.name
        return f"{self.name} (artefact sha256 {self.artefact_sha256})"

    def uid_parts(self) -> list[str]:
        """What the SR's UID adds for this runtime: nothing for Keras fp32, so its UIDs stay
        what they always were; another runtime's probabilities differ in their last digits
        and make another document (a PACS keeps the first of two objects with one UID)."""
        if self.name == KERAS_RUNTIME:
            return []
        return [self.name, self.artefact_sha256 or ""]


@dataclass(frozen=True)
class ResultObjects:
    """What one analysed image yields: the SR (finding) and the SC (Grad-CAM overlay)."""

    sr: Dataset
    sc: Dataset
    robustness: RobustnessBlock | None = None
    #: why the robustness asked for is not (all) in the SR, e.g. its deadline passed
    robustness_skipped: str | None = None
    #: what computed the SR's probabilities
    runtime: RuntimeIdentity = field(default_factory=RuntimeIdentity)


def build_structured_report(
    source: Dataset,
    finding: Finding,
    model: ModelIdentity,
    *,
    robustness: RobustnessBlock | None = None,
    runtime: RuntimeIdentity | None = None,
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
    name, version, and as parameters ``weights_sha256=...``, ``runtime=...`` and, for a runtime
    with a converted artefact, ``runtime_artefact_sha256=...``) and the source image reference;
    the predicted class's group also carries it as a qualitative evaluation (SCT
    "Classification"); and a root comment stating the finding, the model, the runtime and that
    this is not for diagnosis (TID 1500 is extensible). The source's Study/Series/SOP Instance
    UIDs are also recorded as evidence.

    ``runtime``: what computed the probabilities (None: Keras fp32).

    With ``robustness`` (the per-prediction block of :mod:`training.trust.answer`), one more
    group about the predicted class records it as numeric measurements: see
    :func:`_robustness_group`.
    """
    header = _source_header(source)
    runtime = runtime or RuntimeIdentity()
    algorithm = hd.sr.AlgorithmIdentification(
        name=model.name,
        version=str(model.version),
        parameters=[f"weights_sha256={model.weights_sha256}", *runtime.parameters()],
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
    if robustness is not None and (robustness.flip or robustness.certified):
        groups.append(_robustness_group(robustness, finding, model, header, reference))
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
                f"by {model.describe()}, computed by the {runtime.describe()} runtime. "
                f"{NOT_FOR_DIAGNOSIS}"
            ),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[_without_study_values(header)],
        content=report[0],
        series_instance_uid=_uid("sr-series", header.SeriesInstanceUID, *_model_parts(model)),
        series_number=series_number,
        sop_instance_uid=_uid(
            "sr",
            header.SOPInstanceUID,
            *_model_parts(model),
            *_robustness_parts(robustness),
            *runtime.uid_parts(),
        ),
        instance_number=_instance_number(source),
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=_series_description("AI finding"),
    )
    _copy_study(header, sr)
    schemes = [(CLASS_SCHEME, "medrobust model class names")]
    if len(groups) > len(finding.probabilities):
        schemes.append((TRUST_SCHEME, "medrobust robustness concepts and methods"))
    sr.CodingSchemeIdentificationSequence = [_scheme(*scheme) for scheme in schemes]
    return sr


def _robustness_parts(block: RobustnessBlock | None) -> list[str]:
    """What the SR records beyond the finding, for its UID: an SR with a robustness group is
    another document than one without (a PACS keeps the first of two objects with one UID), and
    without one the UID stays what it always was."""
    if block is None:
        return []
    return [*sorted(block.flip or {}), *(["certified"] if block.certified else [])]


def _scheme(designator: str, name: str) -> Dataset:
    scheme = Dataset()
    scheme.CodingSchemeDesignator = designator
    scheme.CodingSchemeName = name
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    return scheme


def _trust_concept(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=TRUST_SCHEME, meaning=meaning)


FLIP_LOWER = _trust_concept("flip-lower", "Largest epsilon tried without a flip (empirical)")
FLIP_UPPER = _trust_concept("flip-upper", "Smallest epsilon with a verified flip")
FLIP_CLASS = _trust_concept("flip-class", "Class of the flipping image")
CERTIFIED_RADIUS = _trust_concept("cert-radius", "Certified L2 radius of smoothed classifier")
CERTIFIED_P_LOWER = _trust_concept("cert-p-lower", "Lower confidence bound of top class")
SMOOTHED_CLASS = _trust_concept("smoothed-class", "Class of the smoothed classifier")
ABSTAIN = _trust_concept("abstain", "Abstain")
NORM_NAMES = {"inf": "L-inf", "2": "L2"}


def _robustness_group(
    block: RobustnessBlock,
    finding: Finding,
    model: ModelIdentity,
    header: Dataset,
    reference: hd.sr.SourceImageForMeasurementGroup,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """A TID 1501 group about the predicted class: how far its prediction can be pushed.

    Every number is a NUM item with a UCUM unit and a Measurement Method naming how it was
    found (e.g. "apgd_ce bracket search, L-inf"); each carries its own algorithm
    identification (TID 4019) whose parameters say what the number depends on (steps and
    restarts; σ, n0, n, α). The flip bracket's lower end is empirical, not a guarantee (its
    concept says so); an upper end exists only when a flip was found and verified, so an
    unverified or missing one is left out rather than written as a number a reader might trust.
    """
    measurements: list[hd.sr.Measurement] = []
    evaluations: list[hd.sr.QualitativeEvaluation] = []
    index_of = {name: index for index, name in enumerate(finding.probabilities)}

    def class_code(name: str) -> hd.sr.CodedConcept:  # the block names the model's classes
        return _class_concept(index_of[name], name)

    for bound in (block.flip or {}).values():
        method, algorithm = _flip_method(bound)
        values = [(FLIP_LOWER, bound.lower)]
        if bound.upper is not None and bound.verified:
            values.append((FLIP_UPPER, bound.upper))
            if bound.found_class is not None:
                evaluations.append(
                    hd.sr.QualitativeEvaluation(
                        name=FLIP_CLASS, value=class_code(bound.found_class)
                    )
                )
        measurements += [
            hd.sr.Measurement(
                name=name, value=value, unit=PIXEL_VALUE, method=method, algorithm_id=algorithm
            )
            for name, value in values
        ]
    if block.certified is not None:
        certified = block.certified
        method, algorithm = _smoothing_method(certified)
        measurements += [
            hd.sr.Measurement(
                name=CERTIFIED_RADIUS,
                value=certified.radius,
                unit=PIXEL_VALUE,
                method=method,
                algorithm_id=algorithm,
            ),
            hd.sr.Measurement(
                name=CERTIFIED_P_LOWER,
                value=certified.p_lower,
                unit=codes.UCUM.NoUnits,
                method=method,
                algorithm_id=algorithm,
            ),
        ]
        smoothed = certified.smoothed_class
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                name=SMOOTHED_CLASS,
                value=ABSTAIN if smoothed not in index_of else class_code(smoothed),
            )
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_uid("robustness", header.SOPInstanceUID, *_model_parts(model)),
            identifier=f"{model.key} robustness of {finding.class_name}",
        ),
        finding_type=class_code(finding.class_name),
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
        source_images=[reference],
    )


def _flip_method(bound: FlipBound) -> tuple[hd.sr.CodedConcept, hd.sr.AlgorithmIdentification]:
    norm = NORM_NAMES[bound.norm]
    name = f"{bound.attack} bracket search, {norm}"
    method = _trust_concept(f"flip-{bound.attack}-{bound.norm}"[:16], name)
    parameters = [f"steps={bound.steps}", f"restarts={bound.restarts}", f"stopped={bound.stopped}"]
    return method, _trust_algorithm(name, parameters)


def _smoothing_method(
    certified: CertifiedBound,
) -> tuple[hd.sr.CodedConcept, hd.sr.AlgorithmIdentification]:
    name = "randomized smoothing (Cohen et al. 2019), L2"
    parameters = [
        f"sigma={certified.sigma:g}",
        f"n0={certified.n0}",
        f"n={certified.n}",
        f"alpha={certified.alpha:g}",
    ]
    if certified.trained_sigma is not None:
        parameters.append(f"trained_sigma={certified.trained_sigma:g}")
    return _trust_concept("rand-smoothing", name), _trust_algorithm(name, parameters)


def _trust_algorithm(name: str, parameters: list[str]) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=name, version=TRUST_METHOD_VERSION, parameters=parameters, manufacturer=MANUFACTURER
    )


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
