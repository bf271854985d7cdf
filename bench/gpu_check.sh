#!/usr/bin/env bash
# The GPU check: one short run on a lent CUDA machine that ends with a true verdict (`make gpu-check`, or as is).
#   0. CUDA or nothing: without a Python whose torch sees a GPU it fails at once (exit 2, one line)
#   1. dependencies: pyproject.toml's ranges checked (huggingface_hub included) and their versions printed;
#      what is missing or out of range is installed from bench/gpu_wheels/ (no network there); torch is the image's
#   2. pytest -m gpu, each test at most 90 s (pytest-timeout)
#   3. bench/exactness_probe.py: CUDA against the CPU by sha256 on inputs built to break a careless kernel
#   4. the 953 M-parameter triplet (bench/merge.py's generator) merged at λ 0.7 by `chatvector merge` on cuda and on
#      cpu: wall times, and `cmp` of every output shard and the index
#   5. the verdict, last line: `gpu-check: PASS` or `gpu-check: FAIL: <the first reason>`
# Budget: under 5 minutes on a 16-core H100 machine, install and generation included. Results: "${OUT:-.bench/gpu}"
# (at most 8 files: gpu-env.txt, gpu-pytest.log, exactness.log, exactness.json, merge-953m.log, gpu-check.txt);
# work files (the triplet, the outputs) under .bench/.
#
# Wheels for a machine without network, prepared here (they stay out of git: bench/gpu_wheels/ is ignored):
#   bash bench/gpu_check.sh --prepare-wheels [PYTHON_VERSION ...]    # default 3.10 3.11 3.12
# downloads with `pip download --only-binary=:all:` every runtime and test dependency (torch excluded) for
# manylinux x86_64 and those Python versions; the lent machine's run carries the folder (carry: bench/gpu_wheels).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WHEELS="$ROOT/bench/gpu_wheels"

if [ "${1:-}" = "--prepare-wheels" ]; then
    shift
    versions=("${@:-3.10 3.11 3.12}")
    reqs=$(.venv/bin/python - <<'EOF'
import sys; sys.path.insert(0, "bench")
import gpu_deps
print(" ".join(r for r in gpu_deps.requirements() if not r.startswith("torch")))
EOF
)
    mkdir -p "$WHEELS"
    for v in ${versions[*]}; do
        # shellcheck disable=SC2086
        .venv/bin/python -m pip download --quiet --only-binary=:all: --platform manylinux2014_x86_64 \
            --platform manylinux_2_28_x86_64 --python-version "$v" -d "$WHEELS" $reqs || exit 1
    done
    du -sh "$WHEELS"
    exit 0
fi

OUT="${OUT:-.bench/gpu}"
WORK="$ROOT/.bench/gpu-work"
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$ROOT/pipeline${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_DISABLE_PROGRESS_BARS=1
start=$SECONDS
verdict() {  # the last line, also kept in $OUT/gpu-check.txt
    echo "$1" | tee -a "$OUT/gpu-check.txt"
    [ "$1" = "gpu-check: PASS" ] && exit 0
    exit "${2:-1}"
}
: > "$OUT/gpu-check.txt"

# 0. The interpreter whose torch sees CUDA: the image's python3 (a carried .venv holds the CPU build of torch).
PY=""
for cand in python3 python .venv/bin/python; do
    if command -v "$cand" >/dev/null 2>&1 \
        && "$cand" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        PY="$cand"; break
    fi
done
if [ -z "$PY" ]; then
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
    verdict "gpu-check: FAIL: no CUDA: no Python here has a torch that sees a GPU (nvidia-smi: ${gpu:-none}); run this on a machine with an NVIDIA GPU" 2
fi

# 1. Dependencies: check, install what is missing from the carried wheels, check again.
{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.free --format=csv,noheader 2>&1
    echo "cpus: $(nproc), $(free -g | awk '/Mem:/ {print $2 " GB memory"}'), disk: $(df -h . | awk 'NR==2 {print $4 " free"}')"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0))"
} > "$OUT/gpu-env.txt" 2>&1
if ! "$PY" bench/gpu_deps.py > "$WORK/deps.txt" 2>&1; then
    need=$(sed -n 's/^install: //p' "$WORK/deps.txt")
    if [ -n "$need" ] && [ -d "$WHEELS" ]; then
        echo "== installing from bench/gpu_wheels: $need"
        eval "timeout 90 \"$PY\" -m pip install --quiet --no-index --find-links \"$WHEELS\" $need" >> "$OUT/gpu-env.txt" 2>&1
    fi
    if ! "$PY" bench/gpu_deps.py > "$WORK/deps.txt" 2>&1; then
        cat "$WORK/deps.txt" >> "$OUT/gpu-env.txt"
        cat "$OUT/gpu-env.txt"
        what=$(grep -E "MISSING|OUT OF RANGE" "$WORK/deps.txt" | awk '{print $1 " " $2}' | paste -sd, -)
        verdict "gpu-check: FAIL: dependencies not in pyproject.toml's ranges: $what (prepare bench/gpu_wheels: bash bench/gpu_check.sh --prepare-wheels, and carry it)"
    fi
fi
cat "$WORK/deps.txt" >> "$OUT/gpu-env.txt"
cat "$OUT/gpu-env.txt"
fail=""
note() { [ -z "$fail" ] && fail="$1"; echo "!! $1"; }

# 2. The gpu tests, each bounded: a hang fails one test, not the run.
echo "== pytest -m gpu ($(( SECONDS - start )) s)"
timeout 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider -rs --timeout 90 tests > "$OUT/gpu-pytest.log" 2>&1
rc=$?
tail -15 "$OUT/gpu-pytest.log"
summary=$(tail -1 "$OUT/gpu-pytest.log")
if [ "$rc" -ne 0 ]; then note "pytest -m gpu: exit $rc: $summary"
elif echo "$summary" | grep -q "skipped"; then note "pytest -m gpu: some gpu tests were skipped: $summary"
elif ! echo "$summary" | grep -q "passed"; then note "pytest -m gpu: no test ran: $summary"
fi

# 3. Exactness: CUDA against the CPU, sha256 of every output file.
echo "== exactness probe ($(( SECONDS - start )) s)"
timeout 120 "$PY" bench/exactness_probe.py --devices cuda,cpu --json "$OUT/exactness.json" > "$OUT/exactness.log" 2>&1
rc=$?
tail -1 "$OUT/exactness.log"
[ "$rc" -eq 0 ] || note "$(tail -1 "$OUT/exactness.log" | cut -c1-300) (exit $rc)"

# 4. The 953 M-parameter merge on both devices: wall times and cmp of every file.
echo "== 953M merge, cuda and cpu ($(( SECONDS - start )) s)"
(  # a subshell: its exits end this step, not the script
    models=$(timeout 150 "$PY" -c "import sys; sys.path.insert(0, 'bench'); import merge; print(merge.generate('1x'))" \
             | tail -1)
    if [ ! -d "$models/cp" ]; then
        echo "generation failed or ran out of time"; exit 3
    fi
    recipe="$WORK/recipe-0.7.yaml"
    printf 'name: gpu-check-953m\nbase: {path: %s/base}\nchat: {path: %s/chat}\ncp: {path: %s/cp}\ncoefficients: {default: 0.7}\noutput: {dtype: bfloat16, shard_size: 1000000000}\n' \
        "$models" "$models" "$models" > "$recipe"
    for dev in cuda cpu; do
        rm -rf "$WORK/out-$dev"
        t0=$EPOCHREALTIME
        timeout 120 "$PY" -m chatvector -q merge "$recipe" --out "$WORK/out-$dev" --device "$dev" --format json \
            > "$WORK/merge-$dev.json" || { echo "merge on $dev failed"; exit 4; }
        echo "wall $dev: $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s"
        "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print('  device', d.get('device'), '| stages', d.get('stages') or d.get('timings'))" "$WORK/merge-$dev.json"
    done
    same=0; files=0
    for f in "$WORK/out-cpu"/model*.safetensors* ; do
        files=$((files + 1))
        if cmp "$f" "$WORK/out-cuda/$(basename "$f")"; then same=$((same + 1)); fi
    done
    echo "cmp: $same of $files files identical (cuda vs cpu)"
    [ "$files" -gt 0 ] && [ "$same" -eq "$files" ] || exit 5
) > "$OUT/merge-953m.log" 2>&1
rc=$?
cat "$OUT/merge-953m.log"
[ "$rc" -eq 0 ] || note "953M merge: $(tail -1 "$OUT/merge-953m.log")"
rm -rf "$WORK/out-cuda" "$WORK/out-cpu"

echo "gpu-check done in $(( SECONDS - start )) s"
[ -z "$fail" ] && verdict "gpu-check: PASS"
verdict "gpu-check: FAIL: $fail"
