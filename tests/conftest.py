"""Shared fixtures: in-process CLI calls, experiment files written on the fly, a tiny experiment."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

# a complete experiment that trains in seconds on CPU
TINY = """\
name: tiny
seed: 3
device: cpu
dataset:
  name: synthetic_lesions
  image_size: 32
  params: {n_train: 24, n_val: 8, n_test: 8}
model:
  backbone: {name: resnet18, params: {pretrained: false}}
  attention: {name: none}
train: {epochs: 1, batch_size: 8, optimizer: {name: adam, lr: 1.0e-3}}
test: {checkpoints: [best_val_loss]}
explain: {methods: [{name: saliency}], samples: 2}
figure: {kinds: [curves, saliency_grid]}
jobs: [train, test, explain, figure]
"""


# the smallest valid experiment (config tests build their cases on it)
BASE = """\
name: t
dataset: {name: synthetic_lesions, image_size: 32}
model:
  backbone: {name: resnet18}
  attention: {name: none}
"""


def problems(path, overrides=None) -> list[str]:
    """Every problem load_experiment reports for a file (it must fail)."""
    from medattn.config import load_experiment
    from medattn.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides)
    return info.value.problems


@pytest.fixture
def write(tmp_path: Path):
    """write(name, text) -> path of a dedented file under tmp_path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return _write


@pytest.fixture
def cli(capsys):
    """cli(*args) -> (exit code, stdout, stderr), run in-process."""
    from medattn.cli import main

    def _cli(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return _cli


@pytest.fixture
def tiny(write, tmp_path):
    """Path of the tiny experiment file, writing its runs under tmp_path/runs."""
    return write("tiny.yaml", TINY + f"output_dir: {tmp_path / 'runs'}\n")


# ---------------------------------------------------------------------------------------------------------------
# a real PACS: Orthanc with its DICOMweb plugin, started once per session when a test asks for it
# ---------------------------------------------------------------------------------------------------------------
ORTHANC_PLUGINS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")
# the "reader" account may read but not write: its STOW-RS requests are refused (403), a rejection to test
ORTHANC_LUA = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  if username == 'reader' and method ~= 'GET' then
    return false
  end
  return true
end
"""


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A running Orthanc on a free loopback port (HTTP only, no remote access, a temporary storage folder and
    config), with its DICOMweb plugin at ``url``; users ``medattn`` (read and write) and ``reader`` (read only),
    both with the password ``secret``. Skipped, with the reason, where Orthanc or the plugin is not installed."""
    import json
    import shutil
    import socket
    import subprocess
    import time
    import urllib.request
    from types import SimpleNamespace

    exe = shutil.which("Orthanc")
    plugin = next((p for p in ORTHANC_PLUGINS if Path(p).exists()), None)
    if exe is None or plugin is None:
        pytest.skip("Orthanc or its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb; "
                    ".ci/run does)")
    folder = tmp_path_factory.mktemp("orthanc")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "filter.lua").write_text(ORTHANC_LUA)
    config = {"Name": "medattn-tests", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
              "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False, "SslEnabled": False,
              "AuthenticationEnabled": True, "RegisteredUsers": {"medattn": "secret", "reader": "secret"},
              "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
              "LuaScripts": [str(folder / "filter.lua")], "HttpTimeout": 30}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen([exe, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    request = urllib.request.Request(f"{root}/system", headers={"Authorization": "Basic bWVkYXR0bjpzZWNyZXQ="})
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(request, timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.close()
                pytest.fail(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.1)
    try:
        yield SimpleNamespace(url=f"{root}/dicom-web", root=root, port=port, log=folder / "orthanc.log")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
