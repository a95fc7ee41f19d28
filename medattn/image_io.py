"""Reading images into float arrays in [0, 1], and sizing them into tensors: files, PIL images, numpy arrays and
tensors (:func:`decode`, what ``predict`` accepts).

PNG (8 and 16 bit), JPEG, TIFF and anything else Pillow opens; DICOM through pydicom with the modality
LUT (rescale slope / intercept), the VOI LUT or window (when present and ``dicom_voi`` is on) and
MONOCHROME1 inversion, compressed transfer syntaxes through pydicom's decoder plugins (:func:`dicom_array`).
A file that cannot be read raises :class:`BadImage` with the reason and its kind; datasets turn that into a
UserError naming the file (or skip it, with ``on_bad_sample: skip``); predict reads DICOM strictly (no
multi-frame, no FOR PROCESSING images: :func:`dicom_problem`) and keeps the reason in the input's row.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}


class BadImage(Exception):
    """An image file that is missing, unreadable or corrupt (str(e) is the reason; ``kind`` a short name of the
    reason that summaries count: unreadable, not an image, undecodable, unsupported pixels, multi-frame,
    for processing)."""

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


def is_dicom(path: Path) -> bool:
    """True when ``path`` has a DICOM suffix or the DICM preamble marker."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_image(path: str | Path, dicom_voi: bool = True, strict: bool = False) -> np.ndarray:
    """Decode one file to float32 (H, W) for grey or (H, W, 3) for colour, values in [0, 1] (``strict``: see
    :func:`dicom_problem`)."""
    path = Path(path)
    if not path.is_file():
        raise BadImage("file not found")
    if is_dicom(path):
        return read_dicom(path, dicom_voi=dicom_voi, strict=strict)
    return read_pillow(path)


def read_pillow(path: Path) -> np.ndarray:
    """Decode a PNG / JPEG / TIFF / BMP with Pillow, keeping 16-bit depth."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return pil_to_array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"cannot decode image: {exc}") from None


def pil_to_array(im: Any) -> np.ndarray:
    """A loaded PIL image as float32 (H, W) or (H, W, 3) in [0, 1]: 16-bit depth kept, float images min-max
    scaled, grey stored as RGB returned as grey."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im, dtype=np.float32) / 65535.0
    if mode == "I":
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return np.clip(arr / top, 0, 1).astype(np.float32)
    if mode == "F":
        return _minmax(np.asarray(im, dtype=np.float32))
    if mode in ("L", "1", "LA"):
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])  # grey stored as RGB (common in JPEG releases)
    return rgb


def _minmax(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def read_dicom(path: Path, dicom_voi: bool = True, strict: bool = False) -> np.ndarray:
    """Decode a DICOM file: modality LUT, then VOI LUT / window when present, MONOCHROME1 inverted
    (:func:`dicom_array`; ``strict``: refuse what a trained model must not be given, see there)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as exc:
        raise BadImage(f"not a readable DICOM file: {exc}") from None
    return dicom_array(ds, dicom_voi, strict)


# what dicom_array takes: grey (the modality / VOI pipeline) and colour (pydicom gives YBR as RGB)
GREY = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")


def dicom_problem(ds: Any, strict: bool = False) -> BadImage | None:
    """Why a DICOM dataset cannot be given to a model, before decoding it (None: it can):

    - no pixel data (a structured report, presentation state, encapsulated PDF ...): ``not an image``;
    - a photometric interpretation other than MONOCHROME1/2, RGB or YBR (PALETTE COLOR, ...) or a bit depth
      outside 8..16 bits allocated (1-bit overlays, 32-bit dose grids, float pixel data): ``unsupported pixels``;
    - ``strict`` (what predict uses): more than one frame (``multi-frame``: a stack such as tomosynthesis or a
      cine is not one 2-D image; medattn refuses it rather than pick a frame) and ``PresentationIntentType`` FOR
      PROCESSING (``for processing``: raw detector data, which the models trained on the displayed, FOR
      PRESENTATION images have never seen).
    """
    from pydicom.uid import UID

    if "PixelData" not in ds:
        other = next((k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds), None)
        if other:
            return BadImage(f"unsupported pixels: {other} (float pixels); the model takes 8 to 16 bit images",
                            "unsupported pixels")
        what = UID(str(ds.get("SOPClassUID", ""))).name if "SOPClassUID" in ds else "the instance"
        return BadImage(f"not an image: {what} has no pixel data", "not an image")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in GREY + COLOUR:
        return BadImage(f"unsupported pixels: photometric interpretation {photometric}; the model takes "
                        f"{', '.join(GREY)}, RGB or YBR", "unsupported pixels")
    bits = int(ds.get("BitsAllocated", 16))
    if bits not in (8, 16) or int(ds.get("BitsStored", bits)) > 16:
        return BadImage(f"unsupported pixels: {bits} bits allocated ({ds.get('BitsStored', bits)} stored); the "
                        "model takes 8 to 16 bit images", "unsupported pixels")
    if strict:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            return BadImage(f"multi-frame: {frames} frames; predict takes single-frame images (split the frames "
                            "into instances first)", "multi-frame")
        intent = str(ds.get("PresentationIntentType", "")).upper()
        if intent == "FOR PROCESSING":
            return BadImage("for processing: PresentationIntentType is FOR PROCESSING (raw detector data); the "
                            "model takes FOR PRESENTATION images", "for processing")
    return None


def dicom_array(ds: Any, dicom_voi: bool = True, strict: bool = False) -> np.ndarray:
    """A pydicom dataset's image as float32 (H, W) or (H, W, 3) in [0, 1]: modality LUT, then VOI LUT / window
    when present and ``dicom_voi``, MONOCHROME1 inverted; colour as RGB. Compressed transfer syntaxes (JPEG
    baseline, extended and lossless, JPEG-LS, JPEG 2000, RLE) are decoded by pydicom's plugins (pylibjpeg with
    libjpeg and openjpeg, pyjpeg-ls); what cannot be given to a model raises :class:`BadImage` with its kind
    (:func:`dicom_problem`)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    problem = dicom_problem(ds, strict)
    if problem is not None:
        raise problem
    try:
        arr = ds.pixel_array  # YBR comes back as RGB (pydicom >= 3 converts it)
    except Exception as exc:  # pydicom raises many types for missing decoders / truncated data
        syntax = ds.file_meta.get("TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
        name = getattr(syntax, "name", None) or str(syntax or "?")
        raise BadImage(f"undecodable: cannot decode the pixel data ({name}): {exc}", "undecodable") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    colour = photometric in COLOUR
    if arr.ndim == (4 if colour else 3):
        arr = arr[0]  # multi-frame, not strict: the first frame
    if colour:
        top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        return np.clip(arr.astype(np.float32) / top, 0, 1)
    values = apply_modality_lut(arr, ds).astype(np.float64)
    has_voi = "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
    if dicom_voi and has_voi:
        out = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
        # the output range of the LUT / window: push the extreme inputs through the same function
        probe = np.asarray(apply_voi_lut(np.array([values.min() - 1e6, values.max() + 1e6]), ds),
                           dtype=np.float64)
        lo, hi = float(probe.min()), float(probe.max())
        img = ((out - lo) / (hi - lo)).astype(np.float32) if hi > lo else _minmax(out)
        img = np.clip(img, 0, 1)
    else:
        img = _minmax(values)
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    return img


def array_image(image: Any) -> np.ndarray:
    """A numpy array or tensor as float32 (H, W) or (H, W, 3) in [0, 1]. Arrays are (H, W), (H, W, C) or
    (C, H, W); tensors (C, H, W) or (H, W). uint8 is scaled by 255, uint16 by 65535, floats are taken as [0, 1]."""
    chw = _is_tensor(image)
    a = image.detach().cpu().numpy() if chw else np.asarray(image)
    if a.ndim == 3 and (chw or (a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4))):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] in (1, 4):
        a = a[..., 0] if a.shape[-1] == 1 else a[..., :3]  # one channel; RGBA without its alpha
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise BadImage(f"an image array must be (H, W), (H, W, 1|3|4) or (1|3, H, W); got shape {tuple(image.shape)}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        return np.clip(a.astype(np.float32) / (65535.0 if a.max(initial=0) > 255 else 255.0), 0, 1)
    if not np.issubdtype(a.dtype, np.floating):
        raise BadImage(f"an image array must hold numbers; got dtype {a.dtype}")
    return a.astype(np.float32)


def decode(image: Any, dicom_voi: bool = True, strict: bool = False) -> np.ndarray:
    """Any accepted image (path, pydicom dataset, PIL image, numpy array, tensor) as float32 (H, W) or (H, W, 3)
    in [0, 1] (``strict``: DICOM as :func:`dicom_problem` says)."""
    if isinstance(image, (str, Path)):
        return read_image(image, dicom_voi, strict)
    if _is_dataset(image):
        return dicom_array(image, dicom_voi, strict)
    if isinstance(image, np.ndarray) or _is_tensor(image):
        return array_image(image)
    if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image
        try:
            return pil_to_array(image)
        except (OSError, ValueError) as exc:
            raise BadImage(f"cannot convert the PIL image: {exc}") from None
    raise BadImage(f"not an image: {type(image).__name__} (give a path, a PIL image, a numpy array or a tensor)")


def _is_dataset(value: Any) -> bool:
    """A pydicom Dataset (without importing pydicom: if it is not imported, no dataset exists)."""
    pydicom = sys.modules.get("pydicom")
    return pydicom is not None and isinstance(value, pydicom.Dataset)


def _is_tensor(value: Any) -> bool:
    """A torch tensor (without importing torch: if it is not imported, no tensor exists)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def to_tensor(arr: np.ndarray, size: tuple[int, int], channels: int, resize: str = "stretch") -> Any:
    """(H, W) or (H, W, 3) float array -> float tensor (channels, *size) in [0, 1] (antialiased resize;
    ``resize: pad`` keeps the aspect ratio, see :func:`fit`)."""
    import torch
    from torchvision.transforms.v2 import functional as F

    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    if tuple(t.shape[-2:]) != tuple(size):
        t = fit(t, size, resize)
    t = t.clamp_(0.0, 1.0)
    if channels == 3 and t.shape[0] == 1:
        t = t.expand(3, -1, -1).contiguous()
    elif channels == 1 and t.shape[0] == 3:
        t = F.rgb_to_grayscale(t)
    return t


def mask_to_tensor(arr: np.ndarray, size: tuple[int, int], resize: str = "stretch") -> Any:
    """(H, W) mask array (any scale) -> float tensor (1, *size) of 0/1 (resized as its image, thresholded)."""
    import torch

    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    t = torch.from_numpy((np.asarray(arr) > 0).astype(np.float32))[None]
    if tuple(t.shape[-2:]) != tuple(size):
        t = (fit(t, size, resize) >= 0.5).float()
    return t


def fit(t: Any, size: tuple[int, int], resize: str = "stretch") -> Any:
    """(C, H, W) tensor to (C, *size), antialiased bilinear: ``stretch`` resizes each side to its target;
    ``pad`` keeps the aspect ratio, scaling so the image just fits, and pads the rest with zeros (black; the
    image sits at the top left, so a mammogram's chest wall stays where the file had it)."""
    from torchvision.transforms.v2 import functional as F

    if resize == "stretch":
        return F.resize(t, list(size), interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    h, w = t.shape[-2:]
    scale = min(size[0] / h, size[1] / w)
    inner = [max(1, min(size[0], round(h * scale))), max(1, min(size[1], round(w * scale)))]
    t = F.resize(t, inner, interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    return F.pad(t, [0, 0, size[1] - inner[1], size[0] - inner[0]], fill=0.0)
