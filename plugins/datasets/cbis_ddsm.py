"""``cbis_ddsm``: the original code's preprocessed PNG folders, or the official TCIA release (CSVs + DICOM).

TCIA path resolution (the CSV paths and the downloaded folder names do not match exactly): each CSV
path is stripped of whitespace, quotes and a trailing newline, and tried as ``root/<path>`` and
``root/CBIS-DDSM/<path>``. Failing that, its first component (the case folder, e.g.
``Mass-Training_P_00001_LEFT_CC`` or ``..._1`` for the ROI files) is looked up among the folders under
root (two levels deep) and the DICOM files inside it are used: one file is taken as is; several are
matched by the series UID of the CSV path (the NBIA downloader names series folders
``1.000000-<description>-<last 5 digits of the series UID>``), and a mask / crop pair left ambiguous is
told apart by size (the ROI mask has the full mammogram's size, the crop is smaller).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medattn.api import DataBundle, DataContext, UserError

from .file_dataset import Sample, SkipLog, build_bundle, check_files, options_from
from .image_folder import require_dir
from .tables import Table

CSV_NAMES = {("mass", "train"): "mass_case_description_train_set.csv",
             ("mass", "test"): "mass_case_description_test_set.csv",
             ("calc", "train"): "calc_case_description_train_set.csv",
             ("calc", "test"): "calc_case_description_test_set.csv"}
REQUIRED = ["patient_id", "abnormality id", "pathology", "image file path", "cropped image file path",
            "ROI mask file path"]
PATHOLOGY = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
CLASSES = ["BENIGN", "MALIGNANT"]


def build(params: dict[str, Any], ctx: DataContext) -> DataBundle:
    """Factory of ``cbis_ddsm``."""
    root = require_dir(params["root"])
    if params["layout"] == "original":
        return _build_original(root, params, ctx)
    return _build_tcia(root, params, ctx)


# -- original layout ------------------------------------------------------------------------------------
def _build_original(root: Path, params: dict[str, Any], ctx: DataContext) -> DataBundle:
    opts = options_from(params, ctx)
    skips = SkipLog(ctx.run_dir, ctx.log)
    raw: dict[str, list[tuple[Path, str]]] = {}
    for split in ("train", "val", "test"):
        d = root / split
        if not d.is_dir():
            raise UserError(f"{d}: folder not found (cbis_ddsm layout original expects {root}/train, val, test)")
        items = []
        for png in sorted(d.glob("*.png")):
            txt = d / f"{png.stem}case.txt"
            if not txt.is_file():
                if opts.on_bad_sample == "skip":
                    skips.add(str(png), f"label file {txt.name} not found")
                    continue
                raise UserError(f"{png}: its label file {txt} is missing")
            label = txt.read_text(errors="replace").strip()
            if not label:
                raise UserError(f"{txt}: empty label file")
            items.append((png, label.split()[0]))
        if not items:
            raise UserError(f"{d}: no <stem>.png images found")
        raw[split] = items
    classes = sorted({lab for items in raw.values() for _, lab in items})  # the original's np.unique order
    if len(classes) < 2:
        raise UserError(f"{root}: only one label found ({classes}); cbis_ddsm needs two")
    index = {c: i for i, c in enumerate(classes)}
    parts = {}
    for split, items in raw.items():
        samples = [Sample(str(p), index[lab], f"{split}/{p.name}", f"{split}/{p.stem}", str(p.with_name(
            p.stem + "case.txt"))) for p, lab in items]
        parts[split] = check_files(samples, opts, skips, params["verify"])
    return build_bundle("cbis_ddsm", parts, classes, params, ctx, opts, skips,
                        info={"layout": "original", "root": str(root)}, source=f"cbis_ddsm at {root}")


# -- TCIA layout ------------------------------------------------------------------------------------
class _Resolver:
    """Finds the DICOM file a CSV path means inside the downloaded tree."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cases: dict[str, Path] | None = None
        self._dcms: dict[Path, list[Path]] = {}

    def cases(self) -> dict[str, Path]:
        if self._cases is None:
            self._cases = {}
            for base in (self.root, *[c for c in self.root.iterdir() if c.is_dir()]):
                for c in base.iterdir():
                    if c.is_dir():
                        self._cases.setdefault(c.name, c)
        return self._cases

    def dicoms(self, case_dir: Path) -> list[Path]:
        if case_dir not in self._dcms:
            self._dcms[case_dir] = sorted(case_dir.rglob("*.dcm"))
        return self._dcms[case_dir]

    def resolve(self, csv_path: str, kind: str) -> Path | None:
        """kind: full | crop | mask."""
        rel = csv_path.strip().strip('"').strip().replace("\\", "/")
        for cand in (self.root / rel, self.root / "CBIS-DDSM" / rel):
            if cand.is_file():
                return cand
        parts = [p for p in rel.split("/") if p]
        if not parts:
            return None
        case_dir = self.cases().get(parts[0])
        if case_dir is None:
            return None
        files = self.dicoms(case_dir)
        if len(files) <= 1:
            return files[0] if files else None
        series = parts[2] if len(parts) > 2 else ""
        matched = [f for f in files if series and (series in f.as_posix()
                   or f.parent.name.endswith("-" + series[-5:]))]
        if len(matched) == 1:
            return matched[0]
        pool = matched or files
        desc = "mask" if kind == "mask" else "crop"
        named = [f for f in pool if desc in f.parent.name.lower()]
        if len(named) == 1:
            return named[0]
        return _by_size(pool, largest=(kind == "mask"))


def _by_size(files: list[Path], largest: bool) -> Path | None:
    import pydicom

    sized = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            sized.append((int(ds.Rows) * int(ds.Columns), f))
        except Exception:
            continue
    if not sized:
        return None
    sized.sort(key=lambda t: t[0])
    return sized[-1][1] if largest else sized[0][1]


def _csv_dir(root: Path, params: dict[str, Any]) -> Path:
    if params.get("csv_dir"):
        d = Path(str(params["csv_dir"]))
        d = d if d.is_absolute() else root / d
        if not d.is_dir():
            raise UserError(f"dataset.params.csv_dir: folder not found: {d}")
        return d
    if any((root / n).is_file() for n in CSV_NAMES.values()):
        return root
    for n in CSV_NAMES.values():
        hits = sorted(root.glob(f"*/{n}"))
        if hits:
            return hits[0].parent
    return root


def _build_tcia(root: Path, params: dict[str, Any], ctx: DataContext) -> DataBundle:
    opts = options_from(params, ctx)
    skips = SkipLog(ctx.run_dir, ctx.log)
    csv_dir = _csv_dir(root, params)
    resolver = _Resolver(root)
    roi = params["image"] == "roi_crop"
    parts: dict[str, list[Sample]] = {"train": [], "test": []}
    for abn in params["abnormality"]:
        for split in ("train", "test"):
            path = csv_dir / CSV_NAMES[(abn, split)]
            if not path.is_file():
                raise UserError(f"{path}: CBIS-DDSM case-description CSV not found (needed for abnormality "
                                f"'{abn}'; set dataset.params.csv_dir or dataset.params.abnormality)")
            table = Table(path, REQUIRED)
            by_image: dict[str, Sample] = {}
            for line, r in table.rows():
                where = table.where(line)
                pathology = r["pathology"].strip().upper()
                if pathology not in PATHOLOGY:
                    raise UserError(f"{where}: pathology '{r['pathology']}' is not one of {sorted(PATHOLOGY)}")
                label = PATHOLOGY[pathology]
                patient = r["patient_id"].strip()
                col = "cropped image file path" if roi else "image file path"
                img = resolver.resolve(r[col], "crop" if roi else "full")
                if img is None:
                    problem = f"{r[col].strip()}: no DICOM file found for this CSV path under {root}"
                    if opts.on_bad_sample == "skip":
                        skips.add(r[col].strip(), "not found under root", where)
                        continue
                    raise UserError(f"{where}: {problem}; see the cbis_ddsm docs on how paths are resolved")
                case = r[col].strip().replace("\\", "/").split("/")[0]
                if roi:
                    sid = f"{case}#{r['abnormality id'].strip()}"
                    parts[split].append(Sample(str(img), label, sid, patient, where))
                    continue
                mask = resolver.resolve(r["ROI mask file path"], "mask")
                s = by_image.get(str(img))
                if s is None:
                    s = by_image[str(img)] = Sample(str(img), label, case, patient, where)
                    parts[split].append(s)
                s.label = max(s.label, label)  # an image with any malignant abnormality is malignant
                if mask is not None and mask != img and str(mask) not in s.mask_paths:
                    s.mask_paths.append(str(mask))
    for k in parts:
        parts[k] = check_files(parts[k], opts, skips, params["verify"])
    info = {"layout": "tcia", "image": "roi_crop" if roi else "full", "root": str(root), "csv_dir": str(csv_dir)}
    return build_bundle("cbis_ddsm", parts, CLASSES, params, ctx, opts, skips, has_masks=not roi, info=info,
                        source=f"cbis_ddsm at {root}")
