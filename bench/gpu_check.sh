#!/usr/bin/env bash
# The CUDA checks of the full-resolution work, for a GPU machine with python3, torch, torchvision, pytest, pluggy,
# numpy and pydicom but without medattn installed: run from the repository root as `bash bench/gpu_check.sh`.
# 1. tests/test_position_attention_gpu.py (SDPA parity on CUDA, which kernels take the widths used, the error in
#    place of a math-kernel fallback that cannot fit); 2. bench/attention_memory.py on CUDA in fp32 and in bf16 +
#    channels_last; 3. bench/loader_fullres.py against CUDA training. Output also goes to ${OUT:-.}/gpu_check.log.
set -o pipefail
cd "$(dirname "$0")/.."
shim=$(mktemp -d)
ln -s "$PWD/plugins" "$shim/medattn_plugins"   # the package name setup.cfg maps plugins/ to
export PYTHONPATH="$PWD:$shim${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOG=${OUT:-.}/gpu_check.log
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  $PY -m pytest -q -p no:cacheprovider --noconftest -o addopts="" tests/test_position_attention_gpu.py -rs
  $PY bench/attention_memory.py --device cuda ${SIZES:+--sizes $SIZES}
  $PY bench/attention_memory.py --device cuda --bf16 --channels-last ${SIZES:+--sizes $SIZES}
  $PY bench/loader_fullres.py --device cuda --workers 8 --batch 4
} 2>&1 | tee "$LOG"
