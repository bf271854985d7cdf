#!/usr/bin/env bash
# The merge engine's checks on a CUDA machine (`make gpu-check`, or on a lent GPU machine as is).
#   1. pytest -m gpu: CUDA result == CPU result bit for bit with λ = 1, within 1 ulp otherwise
#   2. bench/merge.py on the 953 M-parameter triplet: the engine on cuda and on cpu (1 run each, no
#      mergekit), plus the I/O floor; then the 2x model if time allows (memory must stay flat)
# Logs and results go to "${OUT:-.bench}" (at most 6 files). Budget: under 8 minutes on a 16-core
# H100 machine, model generation included.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-.bench}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/pipeline${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$SECONDS

# The interpreter whose torch sees CUDA: on the lent machines the image's python3 (the carried
# .venv holds the CPU build of torch, for another Python, so it only serves as a fallback).
pick() {  # the first interpreter for which the check passes
    for cand in python3 .venv/bin/python python; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "$1" 2>/dev/null; then echo "$cand"; return; fi
    done
}
PY="$(pick 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)')"
{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
    echo "cpus: $(nproc)"
    df -h . | tail -1
    if [ -n "$PY" ]; then
        "$PY" -c "import sys, torch, safetensors, transformers; print(sys.executable, sys.version.split()[0], 'torch', torch.__version__, 'safetensors', safetensors.__version__, 'transformers', transformers.__version__)"
    else
        echo "no Python here sees CUDA: the GPU tests will be skipped"
    fi
} 2>&1 | tee "$OUT/gpu-env.txt"
DEVICES=cuda,cpu
if [ -z "$PY" ]; then
    DEVICES=cpu
    PY="$(pick 'import torch')"
    PY="${PY:-python3}"
fi
status=0

echo "== pytest -m gpu"
"$PY" -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors tests 2>&1 | tee "$OUT/gpu-pytest.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== bench 1x: engine on $DEVICES, I/O floor"
timeout 330 "$PY" bench/merge.py --device "$DEVICES" --skip-mergekit --skip-publish --runs 1 --size 1x \
    --results "$OUT/gpu-bench-1x.json" 2>&1 | tee "$OUT/gpu-bench-1x.log"
bench1=${PIPESTATUS[0]}
[ "$bench1" -eq 0 ] || status=1

left=$(( 420 - (SECONDS - start) ))
if [ "$bench1" -ne 0 ]; then
    echo "== bench 2x skipped: the 1x run failed"
elif [ "$left" -gt 150 ]; then
    echo "== bench 2x: engine on ${DEVICES%%,*} ($left s left)"
    timeout "$left" "$PY" bench/merge.py --device "${DEVICES%%,*}" --skip-mergekit --skip-publish --runs 1 --size 2x \
        --results "$OUT/gpu-bench-2x.json" 2>&1 | tee "$OUT/gpu-bench-2x.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
else
    echo "== bench 2x skipped: only $left s left of the budget"
fi
echo "gpu_check done in $(( SECONDS - start )) s, status $status"
exit $status
