"""A prediction as a DICOM Comprehensive SR (TID 1500 Measurement Report, written by highdicom), and read back.

One report per input instance. Its content tree (docs/dicom.md shows a dump):

- the observer is a device: medattn with the model's name, its UID derived from the model file's sha256;
- one image measurement group (TID 1501), whose source image is the input instance (its SOP class and
  instance UIDs; the study and series are in the report's evidence), holding
  - finding type SCT 404684003 "Finding", and the qualitative evaluation *Classification* (SCT 278201002) = the
    predicted class's code (:func:`class_code`);
  - *Probability* (DCM 122157) = P(predicted class), and per class ``99MEDATTN PROB<k>`` "Probability of <class>";
  - *Threshold Value* (DCM 122411) = the decision threshold of a binary model;
  - where the model file has them (:func:`model_uncertainty`): ``99MEDATTN CALPROB`` the calibrated probability of
    the predicted class, one ``99MEDATTN CONFSET`` qualitative evaluation per class in the conformal set and
    ``99MEDATTN ALPHA`` the set's miscoverage level;
  - the algorithm identification: name, version, and as parameters the model file's sha256, the checkpoint and
    the research-use note.

``99MEDATTN`` is medattn's private coding scheme (DICOM reserves designators starting with ``99`` for private
schemes); it is declared in the report's Coding Scheme Identification Sequence and listed in docs/dicom.md.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

RESEARCH_NOTE = "research use only: not a medical device, not for diagnostic use"
SERIES_DESCRIPTION = "medattn AI result - RESEARCH USE ONLY"
PRIVATE_SCHEME = "99MEDATTN"
PRIVATE_SCHEME_NAME = "medattn class and result codes"


def _private(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value, PRIVATE_SCHEME, meaning[:64])


def calibrated_concept() -> Any:
    return _private("CALPROB", "Calibrated probability")


def conformal_member_concept() -> Any:
    return _private("CONFSET", "Conformal prediction set member")


def conformal_alpha_concept() -> Any:
    return _private("ALPHA", "Conformal miscoverage level")


def class_probability_concept(index: int, name: str) -> Any:
    return _private(f"PROB{index}", f"Probability of {name}")


def class_code(name: str, index: int) -> Any:
    """The code of a class name: SNOMED CT where DICOM's code dictionary (pydicom.sr.codedict, the SCT concepts
    DICOM's context groups use) has the name as a keyword (``NORMAL`` -> SCT 17621005 "Normal", ``malignant`` ->
    SCT 21594007), else ``99MEDATTN`` with the class name as the value (``CLASS<index>`` when the name does not
    fit a 16-character code value) and as the meaning. A new concept each call (a dataset, so mutable)."""
    from highdicom.sr import CodedConcept

    return CodedConcept(*_class_code(name, index))


@lru_cache(maxsize=256)
def _class_code(name: str, index: int) -> tuple[str, str, str]:
    """(value, scheme designator, meaning) of :func:`class_code`."""
    from pydicom.sr.codedict import codes

    keyword = "".join(w[:1].upper() + w[1:].lower() for w in re.split(r"[^A-Za-z0-9]+", name) if w)
    if keyword.isidentifier():
        try:
            code = getattr(codes.SCT, keyword)
            return str(code.value), str(code.scheme_designator), str(code.meaning)
        except AttributeError:
            pass
    value = name if re.fullmatch(r"[A-Za-z0-9_.\-]{1,16}", name) else f"CLASS{index}"
    return value, PRIVATE_SCHEME, (name or f"class {index}")[:64]


# ---------------------------------------------------------------------------------------------------------------
# what the model file says of itself, and of its uncertainty
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Algorithm:
    """The algorithm identification of a model file: name (experiment/variant), version (medattn's), the file's
    sha256 and checkpoint name."""

    name: str
    version: str
    sha256: str
    checkpoint: str

    @classmethod
    def of(cls, file: str | Path, meta: dict[str, Any]) -> Algorithm:
        from .. import __version__
        from ..files import sha256_file

        file = Path(file)
        config = meta.get("config") or {}
        name = "/".join(str(x) for x in (config.get("name"), meta.get("variant")) if x) or file.stem
        return cls(f"medattn {name}"[:64], str(meta.get("medattn_version") or __version__), sha256_file(file),
                   file.stem)

    @property
    def device_uid(self) -> str:
        """A UID that names this model file wherever it runs (derived from its sha256)."""
        from pydicom.uid import generate_uid

        return generate_uid(entropy_srcs=["medattn", self.sha256])

    def identification(self) -> Any:
        from highdicom.sr import AlgorithmIdentification

        return AlgorithmIdentification(name=self.name, version=self.version[:64],
                                       parameters=[f"model sha256 {self.sha256}", f"checkpoint {self.checkpoint}",
                                                   RESEARCH_NOTE])


@dataclass
class Uncertainty:
    """What a model file adds to a probability: calibrated class probabilities and a conformal set (class indices)."""

    calibrated: np.ndarray | None = None
    conformal_set: list[int] | None = None
    alpha: float | None = None


def model_uncertainty(predictor: Any, probabilities: np.ndarray) -> Uncertainty:
    """Calibrated probabilities and the conformal set of one input, where the model file has them (the
    :class:`~medattn.inference.predictor.Predictor` read and checked ``meta["calibration"]`` and
    ``meta["conformal"]`` when it loaded); nothing where it has not (a model file made before medattn calibrated).

    ``probabilities`` are the input's class probabilities as the Predictor gives them: with a calibration in the
    model file they are the calibrated ones already (the Predictor applies it to the logits), so ``calibrated``
    is they themselves and says that they are. The conformal set is ``Predictor.sets`` of them (what the CSV's
    ``set`` column and the test job give)."""
    p = np.asarray(probabilities, dtype=np.float32)
    sets = predictor.sets(p[None])
    alpha = (predictor.conformal or {}).get("alpha")
    return Uncertainty(p if predictor.calibration is not None else None,
                       None if sets is None else [int(k) for k in np.flatnonzero(sets[0])],
                       float(alpha) if sets is not None and alpha is not None else None)


# ---------------------------------------------------------------------------------------------------------------
# writing and reading the report
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Finding:
    """One input's prediction as the report states it."""

    class_names: list[str]
    probabilities: np.ndarray  # (classes,)
    index: int  # the predicted class
    threshold: float | None  # binary models: the decision threshold
    uncertainty: Uncertainty = field(default_factory=Uncertainty)

    @property
    def label(self) -> str:
        return self.class_names[self.index]


def structured_report(source: Any, finding: Finding, algorithm: Algorithm, series_uid: str, series_number: int,
                      instance_number: int, sop_uid: str | None = None) -> Any:
    """The TID 1500 Comprehensive SR of ``finding`` on the image ``source`` (a pydicom Dataset; its header is
    enough), in a new series ``series_uid`` of the source's study, patient and study attributes copied."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    algo = algorithm.identification()
    measurements = [hd.sr.Measurement(name=codes.DCM.Probability, value=float(finding.probabilities[finding.index]),
                                      unit=codes.UCUM.NoUnits)]
    measurements += [hd.sr.Measurement(name=class_probability_concept(k, c), value=float(finding.probabilities[k]),
                                       unit=codes.UCUM.NoUnits) for k, c in enumerate(finding.class_names)]
    if finding.threshold is not None:
        measurements.append(hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=float(finding.threshold),
                                              unit=codes.UCUM.NoUnits))
    evaluations = [hd.sr.QualitativeEvaluation(codes.SCT.Classification, class_code(finding.label, finding.index))]
    extra = finding.uncertainty
    if extra.calibrated is not None:
        measurements.append(hd.sr.Measurement(name=calibrated_concept(),
                                              value=float(extra.calibrated[finding.index]), unit=codes.UCUM.NoUnits))
    if extra.conformal_set is not None:
        evaluations += [hd.sr.QualitativeEvaluation(conformal_member_concept(),
                                                    class_code(finding.class_names[k], k)) for k in extra.conformal_set]
        if extra.alpha is not None:
            measurements.append(hd.sr.Measurement(name=conformal_alpha_concept(), value=extra.alpha,
                                                  unit=codes.UCUM.NoUnits))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="medattn classification"),
        finding_type=codes.SCT.Finding, algorithm_id=algo, measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)])
    observer = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid, name="medattn", manufacturer_name="medattn (research software)",
            model_name=algorithm.name)))
    report = None
    for library in ([source], None):  # the image library (TID 1600) needs the attributes of the source's IOD
        try:
            report = hd.sr.MeasurementReport(observation_context=observer,
                                             procedure_reported=codes.SCT.ImagingProcedure, imaging_measurements=[group],
                                             title=codes.DCM.ImagingMeasurementReport, referenced_images=library)
            break
        except (AttributeError, ValueError, TypeError):
            if library is None:
                raise
    sr = hd.sr.ComprehensiveSR(evidence=[source], content=report, series_instance_uid=series_uid,
                               series_number=series_number, sop_instance_uid=sop_uid or generate_uid(),
                               instance_number=instance_number, manufacturer="medattn (research software)",
                               is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = SERIES_DESCRIPTION
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = PRIVATE_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "medattn"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def read_finding(sr: Any) -> dict[str, Any]:
    """What a medattn SR states, read back with highdicom: label (the predicted class's name), code, probability,
    probabilities (class name -> value), threshold, calibrated, conformal_set (class names), alpha, algorithm,
    source (the referenced SOP instance UID). ``sr`` is a path or a pydicom Dataset."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    ds = pydicom.dcmread(sr) if isinstance(sr, (str, Path)) else sr
    report = hd.sr.ComprehensiveSR.from_dataset(ds)
    (group,) = report.content.get_image_measurement_groups()

    def values(name: Any) -> list[float]:
        return [float(m.value) for m in group.get_measurements(name=name)]

    def first(name: Any) -> float | None:
        found = values(name)
        return found[0] if found else None

    finding = group.get_qualitative_evaluations(name=codes.SCT.Classification)[0].value
    probabilities = {m.name.meaning[len("Probability of "):]: float(m.value) for m in group.get_measurements()
                     if m.name.scheme_designator == PRIVATE_SCHEME and m.name.value.startswith("PROB")}
    members = group.get_qualitative_evaluations(name=conformal_member_concept())
    names = {(c.value, c.scheme_designator): name for k, name in enumerate(probabilities)
             for c in [class_code(name, k)]}  # a code back to the model's class name

    def named(code: Any) -> str:
        return names.get((code.value, code.scheme_designator), code.meaning)

    algo = _texts(group[0].ContentSequence, {"111001": "name", "111003": "version", "111002": "parameters"})
    return {"label": named(finding), "code": (finding.value, finding.scheme_designator),
            "probability": first(codes.DCM.Probability), "probabilities": probabilities,
            "threshold": first(codes.DCM.ThresholdValue), "calibrated": first(calibrated_concept()),
            "conformal_set": [named(m.value) for m in members] if members else None,
            "alpha": first(conformal_alpha_concept()),
            "algorithm": {"name": algo["name"][0], "version": algo["version"][0], "parameters": algo["parameters"]},
            "source": [s.referenced_sop_instance_uid for s in group.source_images]}


def _texts(items: Any, wanted: dict[str, str]) -> dict[str, list[str]]:
    """The TEXT values of the DCM concepts ``wanted`` (code value -> key) directly in a content sequence."""
    out: dict[str, list[str]] = {key: [] for key in wanted.values()}
    for item in items:
        name = item.ConceptNameCodeSequence[0]
        if name.CodingSchemeDesignator == "DCM" and name.CodeValue in wanted and "TextValue" in item:
            out[wanted[name.CodeValue]].append(str(item.TextValue))
    return out


def references(sr: Any) -> Sequence[str]:
    """The SOP instance UIDs a report's evidence names (CurrentRequestedProcedureEvidenceSequence)."""
    return [item.ReferencedSOPInstanceUID for study in sr.get("CurrentRequestedProcedureEvidenceSequence", [])
            for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence]
