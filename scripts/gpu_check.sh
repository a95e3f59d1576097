#!/usr/bin/env bash
# GPU check of issue 15 (scripts/gpu_check.py), in two halves:
#
#   scripts/gpu_check.sh prepare   # on the session machine: wheels the device lacks -> .whl/,
#                                  # SmolLM2's config + tokenizer (no weights) -> .gpucheck/smollm2/
#   then, with the device tool:    run(command="bash scripts/gpu_check.sh device",
#                                      carry=[".whl", ".gpucheck"], timeout_s=540)
#   scripts/gpu_check.sh device    # on the GPU machine: installs the wheels into /tmp/site and writes
#                                  # $OUT/gpu_check.json and $OUT/gpu_check.log (about 8 minutes on an H200)
#
# The device image has torch, transformers, peft and accelerate, but not trl, datasets, gymnasium
# or stockstats; the versions carried are this venv's, so the device runs what the tests ran.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    PY=${PY:-python}
    exclude=$(git rev-parse --git-path info/exclude)
    for path in /.whl/ /.gpucheck/; do grep -qxF "$path" "$exclude" 2>/dev/null || echo "$path" >>"$exclude"; done
    pins=$("$PY" - <<'PYEOF'
import importlib.metadata as m
names = ["trl", "datasets", "dill", "multiprocess", "gymnasium", "farama-notifications", "stockstats",
         "transformers", "tokenizers", "huggingface-hub", "safetensors", "peft", "accelerate"]
print(" ".join(f"{n}=={m.version(n)}" for n in names))
PYEOF
)
    rm -rf .whl && mkdir -p .whl .gpucheck
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $pins
    PYTHONPATH=. "$PY" - <<'PYEOF'
import shutil
from pathlib import Path
from tr1_agent.models import smollm2_path
src, dst = smollm2_path(), Path(".gpucheck/smollm2")
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.suffix != ".safetensors":  # the weights stay: random ones of the same config are built there
        shutil.copy(f, dst / f.name)
PYEOF
    du -sh .whl .gpucheck
    ;;
device)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    out=${OUT:-.}
    python3 -c "import torch, transformers, trl, datasets, gymnasium, stockstats, peft, accelerate as a
print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'cuda', torch.cuda.is_available())"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia_smi.csv" || true
    timeout 500 python3 scripts/gpu_check.py --out "$out/gpu_check.json" 2>&1 | tee "$out/gpu_check.log"
    ;;
*)
    echo "usage: $0 prepare|device" >&2
    exit 2
    ;;
esac
