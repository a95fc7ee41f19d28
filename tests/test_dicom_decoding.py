"""What PACS send, decoded through pydicom's plugins (pylibjpeg with libjpeg and openjpeg, pyjpegls): JPEG
baseline, extended and lossless, JPEG-LS, JPEG 2000 and RLE, on pydicom's bundled files and on files the tests
encode; and what a model must not be given, refused with a kind: non-images, undecodable data, unsupported
photometric interpretations and bit depths, multi-frame and FOR PROCESSING instances (the last two in predict)."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from medattn.image_io import BadImage, decode, dicom_array

from .dicom_studies import bundled, instance


def array(name: str, **kw) -> np.ndarray:
    return dicom_array(pydicom.dcmread(bundled(name)), **kw)


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"])
def test_lossless_syntaxes_decode_to_the_uncompressed_pixels(name):
    assert np.array_equal(array(name), array("MR_small.dcm"))


def test_jpeg_baseline_extended_lossless_and_2000_files():
    lossless = array("SC_rgb_jpeg_gdcm.dcm")  # JPEG lossless, process 14
    assert lossless.shape == (100, 100, 3) and np.array_equal(lossless, array("SC_rgb_rle.dcm"))
    baseline = array("SC_rgb_jpeg_dcmtk.dcm")  # JPEG baseline, YBR_FULL: pydicom gives RGB, converted once only
    assert baseline.shape == (100, 100, 3) and float(np.abs(baseline - lossless).mean()) < 0.02
    extended = array("JPGExtended.dcm")  # JPEG extended, 12 bit
    j2k = array("JPEG2000.dcm")  # JPEG 2000 (lossy allowed), 16 bit
    for img in (extended, j2k):
        assert img.shape == (1024, 256) and 0 <= img.min() < img.max() <= 1
    near = array("JPEGLSNearLossless_16.dcm")  # JPEG-LS near-lossless
    assert near.ndim == 2 and np.isfinite(near).all()


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless, RLELossless])
def test_files_the_tests_encode(syntax):
    arr = np.random.default_rng(0).integers(0, 4096, (64, 72))  # openjpeg's default levels need 64+ px
    plain = instance(arr, study=generate_uid(), series=generate_uid())
    packed = instance(arr, study=plain.StudyInstanceUID, series=plain.SeriesInstanceUID, syntax=syntax)
    assert packed.file_meta.TransferSyntaxUID == syntax and len(packed.PixelData) != arr.size * 2
    assert np.array_equal(decode(packed), decode(plain))


def refusal(ds, strict: bool = True) -> BadImage:
    with pytest.raises(BadImage) as info:
        dicom_array(ds, strict=strict)
    return info.value


def test_what_a_model_must_not_be_given():
    sr = refusal(pydicom.dcmread(bundled("test-SR.dcm")))
    assert (sr.kind, str(sr)) == ("not an image", "not an image: Comprehensive SR Storage has no pixel data")
    broken = refusal(pydicom.dcmread(bundled("JPEG-lossy.dcm")))  # a JPEG with a misplaced marker
    assert broken.kind == "undecodable" and "JPEG Extended" in str(broken)
    arr = np.ones((8, 8))
    garbage = instance(arr, study=generate_uid(), series=generate_uid())
    garbage.file_meta.TransferSyntaxUID = JPEG2000Lossless
    garbage.PixelData = encapsulate([b"\x00" * 64])
    assert refusal(garbage).kind == "undecodable"
    palette = refusal(pydicom.dcmread(bundled("examples_palette.dcm")))
    assert palette.kind == "unsupported pixels" and "PALETTE COLOR" in str(palette)
    dose = refusal(pydicom.dcmread(bundled("rtdose_1frame.dcm")))
    assert dose.kind == "unsupported pixels" and "32 bits allocated" in str(dose)


def test_multi_frame_and_for_processing_refused_in_predict_read_by_datasets():
    cine = pydicom.dcmread(bundled("examples_ybr_color.dcm"))  # 30 frames, JPEG baseline YBR_FULL_422
    assert refusal(cine).kind == "multi-frame" and "30 frames" in str(refusal(cine))
    assert dicom_array(cine, strict=False).shape == (240, 320, 3)  # a dataset's reader keeps the first frame
    raw = instance(np.arange(64).reshape(8, 8) * 40, study=generate_uid(), series=generate_uid(),
                   PresentationIntentType="FOR PROCESSING")
    assert refusal(raw).kind == "for processing"
    assert dicom_array(raw, strict=False).shape == (8, 8)
