"""Predicting the images of a DICOMweb server (a PACS, Orthanc ...) and storing the results back.

QIDO-RS finds the instances (a study, a series, or a query), WADO-RS fetches them in their stored transfer
syntax, several at a time, and each fetch worker decodes and preprocesses its instance; the model predicts them
batch by batch; the SRs (and parametric maps) are written (:mod:`.dicom_out`) and, with ``store``, sent back with
STOW-RS while the next batch is predicted. dicomweb-client speaks DICOMweb (with its bounded retry and timeout);
requests carries the authentication, which comes from the environment only:

- ``MEDATTN_DICOMWEB_TOKEN``: a bearer token, or
- ``MEDATTN_DICOMWEB_USER`` and ``MEDATTN_DICOMWEB_PASSWORD``: HTTP basic authentication.

Nothing here prints or records them. One instance that cannot be fetched, decoded, reported on or stored is one
message naming it; the others go on, and :attr:`DicomwebResult.tally` counts each kind of problem.
"""
from __future__ import annotations

import itertools
import os
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

ENV_TOKEN = "MEDATTN_DICOMWEB_TOKEN"
ENV_USER = "MEDATTN_DICOMWEB_USER"
ENV_PASSWORD = "MEDATTN_DICOMWEB_PASSWORD"
RETRIED = (429, 500, 502, 503, 504)  # HTTP answers tried again (with exponential back-off) before giving up
STOW_CHUNK = 16  # instances per STOW-RS request


def session_from_env(env: Mapping[str, str] | None = None) -> Any:
    """A requests Session carrying the credentials the environment gives (bearer token first, else basic)."""
    import requests

    env = os.environ if env is None else env
    session = requests.Session()
    if env.get(ENV_TOKEN):
        session.headers["Authorization"] = f"Bearer {env[ENV_TOKEN]}"
    elif env.get(ENV_USER):
        session.auth = (env[ENV_USER], env.get(ENV_PASSWORD, ""))
    return session


def connect(url: str, timeout: float = 30.0, retries: int = 3, env: Mapping[str, str] | None = None) -> Any:
    """A DICOMwebClient for ``url`` (the server's DICOMweb root, e.g. http://host:8042/dicom-web): each request
    times out after ``timeout`` seconds and is tried at most ``retries`` times (server errors 5xx, 429 and
    connection failures), waiting 0.4 s, 0.8 s ... between tries."""
    from dicomweb_client.api import DICOMwebClient

    check_url(url)
    try:
        client = DICOMwebClient(str(url).rstrip("/"), session=session_from_env(env), timeout=float(timeout))
    except ValueError as exc:  # dicomweb-client's own URL check ("Malformed URL")
        raise UserError(f"--dicomweb {url}: {exc}; expected the server's DICOMweb root, e.g. "
                        "http://pacs:8042/dicom-web") from None
    client.set_http_retry_params(retry=retries > 1, max_attempts=max(1, int(retries)),
                                 wait_exponential_multiplier=200, retriable_error_codes=RETRIED)
    return client


def check_url(url: str) -> None:
    """A UserError naming --dicomweb and ``url`` unless it is an http:// or https:// URL with a host (and a
    numeric port, when it has one)."""
    from urllib.parse import urlparse

    expected = "expected an http:// or https:// URL of the server's DICOMweb root, e.g. http://pacs:8042/dicom-web"
    if not str(url).startswith(("http://", "https://")):
        raise UserError(f"--dicomweb {url}: {expected}")
    try:
        parts = urlparse(str(url))
        parts.port  # noqa: B018 (a port that is not a number raises ValueError)
    except ValueError as exc:
        raise UserError(f"--dicomweb {url}: {exc}; {expected}") from None
    if not parts.hostname:
        raise UserError(f"--dicomweb {url}: no host; {expected}")


def http_problem(exc: BaseException, url: str, timeout: float | None = None) -> tuple[str, str]:
    """(kind, message) of a failed DICOMweb request: unauthorized, not found, server error, server down,
    timeout, or the exception's own words."""
    import requests

    response = getattr(exc, "response", None)
    last = getattr(exc, "last_attempt", None)  # retrying's RetryError: the tries ran out on an HTTP answer
    if last is not None:  # (on an exception, retrying raises that exception itself: dicomweb-client does not wrap)
        response = last.value
    if response is not None and (isinstance(exc, requests.HTTPError) or last is not None):
        code, reason = response.status_code, response.reason or ""
        if code in (401, 403):
            return "unauthorized", (f"HTTP {code} {reason}: the server refused the credentials (set {ENV_TOKEN}, or "
                                    f"{ENV_USER} and {ENV_PASSWORD})")
        if code == 404:
            return "not found", f"HTTP 404 {reason}: not on the server ({response.url})"
        if code >= 500:
            return "server error", f"HTTP {code} {reason} from the server (after the retries)"
        return "http error", f"HTTP {code} {reason}"
    if isinstance(exc, requests.Timeout):
        return "timeout", f"no answer from {url} within {timeout} s"
    if isinstance(exc, requests.ConnectionError):
        return "server down", f"cannot connect to {url} (is the server running?)"
    return "http error", f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------------------------------
# finding and fetching
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instance:
    """One instance on the server: its study, series and SOP instance UIDs."""

    study: str
    series: str
    sop: str

    def name(self, url: str) -> str:
        """The instance's WADO-RS address (what messages and the CSV call it)."""
        return f"{url.rstrip('/')}/studies/{self.study}/series/{self.series}/instances/{self.sop}"


def parse_query(query: str) -> dict[str, str]:
    """``'Modality=MG&StudyDate=20240101-'`` as QIDO-RS search filters; an unknown attribute is a UserError that
    names it (and the nearest keyword)."""
    import difflib
    from urllib.parse import parse_qsl

    from pydicom.datadict import dictionary_keyword, keyword_dict, tag_for_keyword

    filters = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        key = key.strip()
        tag = tag_for_keyword(key)
        if tag is None and not (len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key)):
            near = difflib.get_close_matches(key, list(keyword_dict), n=1)
            raise UserError(f"--query {query!r}: {key!r} is not a DICOM attribute keyword"
                            + (f" (did you mean {near[0]!r}?)" if near else ""))
        filters[dictionary_keyword(tag) if tag is not None else key] = value
    if query.strip() and not filters:
        raise UserError(f"--query {query!r}: expected KEYWORD=VALUE pairs joined by &, e.g. 'Modality=MG&StudyDate=20240101-'")
    return filters


def find_instances(client: Any, study: str | None = None, series: str | None = None, query: str | None = None
                   ) -> list[Instance]:
    """The instances of a study, a series, or a QIDO-RS query (instance level, every page), in study, series
    and instance number order."""
    from pydicom import Dataset

    filters = parse_query(query) if query else {}
    if series and not study:
        found = client.search_for_series(search_filters={"SeriesInstanceUID": series})
        if not found:
            raise UserError(f"series {series}: not on {client.base_url}")
        study = str(Dataset.from_json(found[0]).StudyInstanceUID)
    rows = client.search_for_instances(study_instance_uid=study, series_instance_uid=series,
                                       search_filters=filters, get_remaining=True)
    out = []
    for row in rows:
        ds = Dataset.from_json(row)
        number = ds.get("InstanceNumber")
        found = Instance(str(ds.get("StudyInstanceUID", study or "")), str(ds.get("SeriesInstanceUID", series or "")),
                         str(ds.SOPInstanceUID))
        out.append((int(number) if number not in (None, "") else 0, found))
    return [i for _, i in sorted(out, key=lambda t: (t[1].study, t[1].series, t[0], t[1].sop))]


@dataclass
class Fetched:
    """One instance as fetched and preprocessed: the dataset without its pixels, the model input (C, H, W) in
    [0, 1], or why there is none (kind and message)."""

    instance: Instance
    header: Any = None
    image: Any = None
    kind: str = ""
    error: str = ""


def fetch(client: Any, instances: list[Instance], load: Any, workers: int = 4, ahead: int = 64
          ) -> Iterator[Fetched]:
    """Fetch ``instances`` with WADO-RS, ``workers`` at a time, in any transfer syntax the server holds; each
    worker also decodes and preprocesses its instance with ``load`` (dataset -> tensor). Yields in order, with
    at most ``ahead`` instances fetched or being fetched beyond the one yielded (the memory bound)."""
    from ..image_io import BadImage

    def one(instance: Instance) -> Fetched:
        try:
            ds = client.retrieve_instance(instance.study, instance.series, instance.sop,
                                          media_types=(("application/dicom", "*"),))
        except Exception as exc:  # requests / HTTP errors, one instance's problem
            kind, why = http_problem(exc, client.base_url, getattr(client, "_timeout", None))
            return Fetched(instance, kind=kind, error=f"cannot fetch: {why}")
        try:
            image = load(ds)
        except BadImage as exc:
            return Fetched(instance, ds, kind=exc.kind, error=str(exc))
        except Exception as exc:  # a malformed dataset: the instance's problem, kept in its row
            return Fetched(instance, ds, kind="unreadable", error=f"cannot preprocess: {type(exc).__name__}: {exc}")
        for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if key in ds:
                del ds[key]  # the SR and map need the header only
        return Fetched(instance, ds, image)

    pending: deque = deque()
    todo = iter(instances)
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        try:
            for instance in itertools.islice(todo, max(1, int(ahead))):
                pending.append(pool.submit(one, instance))
            while pending:
                done = pending.popleft().result()
                for instance in itertools.islice(todo, 1):
                    pending.append(pool.submit(one, instance))
                yield done
        finally:  # a consumer that stops early: nothing more is fetched
            for future in pending:
                future.cancel()


def store(client: Any, datasets: list[Any], chunk: int = STOW_CHUNK) -> dict[str, str | None]:
    """Send ``datasets`` with STOW-RS, ``chunk`` per request: SOP instance UID -> None (stored) or why the server
    did not store it (its failure reason, or the HTTP error of the request that carried it)."""
    from pydicom import Dataset

    out: dict[str, str | None] = {}
    for start in range(0, len(datasets), chunk):
        part = datasets[start:start + chunk]
        uids = [str(ds.SOPInstanceUID) for ds in part]
        try:
            answer = client.store_instances(part)
        except Exception as exc:
            answer = _stow_answer(getattr(exc, "response", None))
            if answer is None:
                _, why = http_problem(exc, client.base_url, getattr(client, "_timeout", None))
                out.update({uid: f"STOW-RS rejected: {why}" for uid in uids})
                continue
        failed = {str(item.get("ReferencedSOPInstanceUID", "")): item.get("FailureReason")
                  for item in (answer or Dataset()).get("FailedSOPSequence", [])}
        for uid in uids:
            if uid not in failed:
                out[uid] = None
            elif failed[uid] in (None, ""):  # in the failed list all the same
                out[uid] = "STOW-RS rejected: failure reason not given"
            else:
                out[uid] = f"STOW-RS rejected: failure reason {_hex(failed[uid])}"
    return out


def _stow_answer(response: Any) -> Any:
    """The STOW-RS response dataset of a refused request, when the server sent one (DICOM JSON)."""
    from pydicom import Dataset

    if response is None or "json" not in str(response.headers.get("Content-Type", "")):
        return None
    try:
        return Dataset.from_json(response.json())
    except ValueError:
        return None


def _hex(reason: Any) -> str:
    try:
        return f"0x{int(reason):04X}"
    except (TypeError, ValueError):
        return str(reason)


# ---------------------------------------------------------------------------------------------------------------
# predicting a server's instances
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class DicomwebResult:
    """What :func:`predict_instances` did: the instances, their class probabilities and predicted indices (-1 and
    the error where there is none), one message per instance with a problem, the counts of each outcome
    (``predicted``, ``SR written``, ``SR stored`` and each kind of problem); ``predictions`` and ``rows`` (one CSV
    row each) are filled in by :meth:`Predictor.predict_dicomweb`."""

    url: str
    instances: list[Instance]
    probabilities: np.ndarray
    indices: np.ndarray
    errors: list[str | None]
    extras: list[dict[str, Any]]  # per instance: sr, note, stored (the CSV's extra cells)
    messages: list[str] = field(default_factory=list)
    tally: Counter = field(default_factory=Counter)
    predictions: Any = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [i.name(self.url) for i in self.instances]

    def problem(self, position: int, kind: str, message: str) -> None:
        self.tally[kind] += 1
        self.messages.append(f"{self.instances[position].name(self.url)}: {message}")

    def summary(self) -> str:
        """One line: how many of how many were predicted, and the count of every other outcome."""
        done = self.tally.get("predicted", 0)
        rest = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.tally.items()) if kind != "predicted")
        return f"{done} of {len(self.instances)} instance(s) predicted from {self.url}" + (f"; {rest}" if rest else "")


def search(client: Any, url: str, study: str | None, series: str | None, query: str | None,
           timeout: float) -> list[Instance]:
    """The instances to predict; a server that cannot be searched, or no match, is a UserError."""
    if not any(x for x in (study, series, query)):
        raise UserError("--dicomweb: give --study UID, --series UID or --query 'KEYWORD=VALUE&...'")
    try:
        instances = find_instances(client, study, series, query)
    except UserError:
        raise
    except Exception as exc:
        _, why = http_problem(exc, url, timeout)
        raise UserError(f"{url}: cannot search the server: {why}") from None
    if not instances:
        what = " ".join(f"--{k} {v}" for k, v in (("study", study), ("series", series), ("query", query)) if v)
        raise UserError(f"{url}: no instances match {what}")
    return instances


def predict_instances(predictor: Any, url: str, study: str | None = None, series: str | None = None,
                      query: str | None = None, *, store_results: bool = False,
                      dicom_out: str | Path | None = None, attribute: Any = None, method: str | None = None,
                      batch_size: int = 32, workers: int = 4, timeout: float = 30.0, retries: int = 3,
                      progress: bool = False, env: Mapping[str, str] | None = None) -> DicomwebResult:
    """Predict the instances of a study, a series or a query on a DICOMweb server (see the module's text).
    ``attribute(raw, scores)``: the attribution maps of a batch (with ``method``, the explainer's name)."""
    from tqdm.auto import tqdm

    from .dicom_out import DicomWriter

    client = connect(url, timeout, retries, env)
    instances = search(client, url, study, series, query, timeout)
    writer = DicomWriter(predictor, dicom_out, method) if (store_results or dicom_out is not None) else None
    n = len(instances)
    result = DicomwebResult(url, instances, np.full((n, len(predictor.class_names)), np.nan, dtype=np.float32),
                            np.full(n, -1, dtype=np.int64), [None] * n, [{} for _ in range(n)])
    fetched = fetch(client, instances, predictor.transform.load, workers, ahead=2 * int(batch_size))
    stored = []  # (what was sent, the server's answers): each batch's results are stored while the next is predicted
    with tqdm(total=n, unit="instance", desc="dicomweb", disable=not progress, leave=False) as bar, \
            ThreadPoolExecutor(max_workers=1) as stow:
        for start in range(0, n, int(batch_size)):
            chunk = [(p, next(fetched)) for p in range(start, min(start + int(batch_size), n))]
            for p, f in chunk:
                if f.image is None:
                    result.errors[p] = f.error
                    result.problem(p, f.kind, f.error)
            ok = [(p, f) for p, f in chunk if f.image is not None]
            outgoing = _predict(predictor, result, ok, writer, attribute) if ok else []
            if store_results and outgoing:
                stored.append((outgoing, stow.submit(store, client, [ds for _, ds in outgoing])))
            bar.update(len(chunk))
        for outgoing, answers in stored:
            _store_back(result, outgoing, answers.result())
    return result


def _predict(predictor: Any, result: DicomwebResult, ok: list[tuple[int, Fetched]], writer: Any, attribute: Any
             ) -> list[tuple[int, Any]]:
    """Predict one batch of fetched instances; write their SRs (and maps); return the datasets to store."""
    import torch

    from ..evidence.metrics import class_probabilities

    raw = torch.stack([f.image for _, f in ok])
    scores, _ = predictor.score_batch(raw)
    probs = class_probabilities(np.asarray(scores, dtype=np.float32))
    indices = predictor.classify(scores)
    maps = attribute(raw, scores) if attribute is not None else None
    outgoing = []
    for j, (p, f) in enumerate(ok):
        result.probabilities[p], result.indices[p] = probs[j], int(indices[j])
        result.tally["predicted"] += 1
        if writer is None:
            continue
        written = writer.write(f.header, probs[j], int(indices[j]), maps[j] if maps is not None else None)
        result.extras[p].update(sr=str(written.files[0]) if written.files else "", note=written.note)
        if written.note:
            result.problem(p, "no parametric map" if written.sr is not None else "no SR", written.note)
        if written.sr is not None:
            result.tally["SR written"] += 1
            outgoing += [(p, ds) for ds in (written.sr, written.map) if ds is not None]
    return outgoing


def _store_back(result: DicomwebResult, outgoing: list[tuple[int, Any]], answers: dict[str, str | None]) -> None:
    """Count the SRs and maps the server stored; one message per result it did not take."""
    from pydicom.uid import ComprehensiveSRStorage

    for p, ds in outgoing:
        why = answers.get(str(ds.SOPInstanceUID))
        kind = "SR" if ds.SOPClassUID == ComprehensiveSRStorage else "map"
        extra = result.extras[p]
        extra.setdefault("stored", "")
        if why is None:
            result.tally[f"{kind} stored"] += 1
            extra["stored"] = f"{extra['stored']} {kind}".strip()
        else:
            result.problem(p, "STOW rejected", f"{kind} {ds.SOPInstanceUID} not stored: {why}")
            extra["note"] = "; ".join(x for x in (extra.get("note"), f"{kind} not stored: {why}") if x)
