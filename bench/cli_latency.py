"""Wall time of `medattn plugins` and `medattn schema` against `python -c pass`, side by side in one run.

Neither command should import torch. Prints medians of several runs; the last line is
`plugins_s=... schema_s=... python_s=...`.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

REPEATS = 5


def timed(cmd: list[str]) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    py = sys.executable
    probe = subprocess.run([py, "-c", "import sys, medattn.cli as c; sys.argv=['medattn','schema'];"
                            "import contextlib, io\nwith contextlib.redirect_stdout(io.StringIO()): c.main(['schema'])\n"
                            "print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    python_s = timed([py, "-c", "pass"])
    plugins_s = timed([py, "-m", "medattn.cli", "plugins"])
    schema_s = timed([py, "-m", "medattn.cli", "schema"])
    print(f"torch imported by `medattn schema`: {probe.stdout.strip()}")
    print(f"plugins_s={plugins_s:.3f} schema_s={schema_s:.3f} python_s={python_s:.3f}")


if __name__ == "__main__":
    main()
