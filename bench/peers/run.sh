#!/usr/bin/env bash
# bench/peers/run.sh: vitkit side by side with ONNX Runtime (npm onnxruntime-node)
# and PyTorch 1.13 (Debian's python3-torch) on the same model, weights, batch,
# threads and precision. The runtimes are interleaved: every round runs a short
# burst of reps of each runtime in turn (A B C, then B C A, ...), so a noisy
# machine slows them alike; the medians over all rounds and the ratios are
# printed as a markdown table and written with the raw times as JSON.
#
# usage: bench/peers/run.sh [--model M,...] [--batch B,...] [--threads T,...] [--precision P,...]
#            [--rounds R] [--reps N] [--warmup N] [--runtimes vitkit,onnxruntime,pytorch,...] [--train]
#   With none of --model/--batch/--threads: the default cases,
#     vit_b_16 batch 1 threads 2, and fmnist batch 256 threads 2, in each --precision (default fp32)
#     (--train: fmnist batch 128 threads 2 fp32, vitkit against PyTorch; see train_bench.sh).
#     The int8 comparison: bench/peers/run.sh --precision fp32,int8 --runtimes vitkit,onnxruntime,pytorch-openblas
#   Otherwise every combination, missing flags defaulting to: --model vit_b_16,fmnist --batch 1
#     --threads 2 --precision fp32 (--train: --model fmnist --batch 128).
#   M: a preset (random weights, seed 0, written by weights.py so all runtimes share them),
#      "fmnist" (models/vit-tiny-fmnist.safetensors, or configs/vit-tiny-fmnist.toml's
#      architecture with random weights when that file is absent), or a vitkit .safetensors file.
#   Runtimes: vitkit, onnxruntime, pytorch (as installed: Debian's build calls the reference
#     BLAS for fp32 matmuls), pytorch-openblas (the same with OpenBLAS preloaded: a fair peer;
#     its .deb is unpacked under results/cache, nothing is installed). Default: all four
#     (without pytorch-openblas when the .deb cannot be had); ONNX Runtime does no --train.
# Environment: VITKIT (default build/vitkit), PYTHON (default /usr/bin/python3),
#   VITKIT_ENV (extra environment for vitkit, e.g. "OMP_WAIT_POLICY=ACTIVE"; default none),
#   TORCH_QENGINE (PyTorch's quantized engine for int8: onednn (default) or qnnpack).
#   PyTorch runs with OMP_WAIT_POLICY=PASSIVE and torch.set_num_threads(T); ONNX Runtime with
#   intraOpNumThreads=T, interOpNumThreads=1, all graph optimisations (its own spinning pool).
#
# Precisions: each runtime handles them in one place; adding one is an entry in each:
#   vitkit       src/vitkit/analyze/bench.cpp, precision_table()   (vitkit bench --precision P)
#   onnxruntime  bench/peers/export_onnx.py, EXPORTS                (how the .onnx is made)
#   pytorch      bench/peers/torch_bench.py, PRECISIONS             (torch_train_bench.py for --train)
# A runtime that lacks a precision exits with status 3 and its column shows "n/a".
# int8 (inference only): vitkit runs the file `vitkit compress FILE --pass quantize:bits=8`
#   writes (cached; int8 weights per output channel, u8 activations per row, integer kernels);
#   ONNX Runtime the fp32 export rewritten into its dynamic int8 ops (export_onnx.py: MatMulInteger,
#   ConvInteger); PyTorch quantize_dynamic({nn.Linear}, qint8) on TORCH_QENGINE (default onednn:
#   the MLP and the head only, see torch_bench.py). Needs python3-onnx for the ONNX side.
#
# Output: bench/peers/results/<time>/ (ignored by git): runs.tsv (every burst), raw/*.json,
#   summary.md, summary.json; results/cache/ keeps weights, ONNX files and OpenBLAS.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
VITKIT=${VITKIT:-$root/build/vitkit}
PYTHON=${PYTHON:-/usr/bin/python3}
VITKIT_ENV=${VITKIT_ENV:-}

models="" batches="" threads="" precisions="" rounds=5 reps=3 warmup=2 runtimes="" train=0
die() { echo "run.sh: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --model) models=${2:?--model needs a value}; shift 2 ;;
    --batch) batches=${2:?--batch needs a value}; shift 2 ;;
    --threads) threads=${2:?--threads needs a value}; shift 2 ;;
    --precision) precisions=${2:?--precision needs a value}; shift 2 ;;
    --rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
    --reps) reps=${2:?--reps needs a value}; shift 2 ;;
    --warmup) warmup=${2:?--warmup needs a value}; shift 2 ;;
    --runtimes) runtimes=${2:?--runtimes needs a value}; shift 2 ;;
    --train) train=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
for v in rounds reps warmup; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "--$v needs a non-negative integer, got '${!v}'"
done
[ "$rounds" -ge 1 ] && [ "$reps" -ge 1 ] || die "--rounds and --reps must be >= 1"

# ---- cases -------------------------------------------------------------------
cases=()  # "model batch threads precision"
if [ -z "$models$batches$threads" ]; then
  # the default cases, in each --precision (default fp32)
  IFS=, read -ra ps <<< "${precisions:-fp32}"
  for p in "${ps[@]}"; do
    if [ $train = 1 ]; then cases+=("fmnist 128 2 $p"); else cases+=("vit_b_16 1 2 $p" "fmnist 256 2 $p"); fi
  done
else
  def_models=vit_b_16,fmnist def_batch=1
  [ $train = 1 ] && { def_models=fmnist; def_batch=128; }
  IFS=, read -ra ms <<< "${models:-$def_models}"
  IFS=, read -ra bs <<< "${batches:-$def_batch}"
  IFS=, read -ra ts <<< "${threads:-2}"
  IFS=, read -ra ps <<< "${precisions:-fp32}"
  for m in "${ms[@]}"; do for b in "${bs[@]}"; do for t in "${ts[@]}"; do for p in "${ps[@]}"; do
    [[ $b =~ ^[1-9][0-9]*$ ]] || die "--batch: '$b' is not a positive integer"
    [[ $t =~ ^[1-9][0-9]*$ ]] || die "--threads: '$t' is not a positive integer"
    cases+=("$m $b $t $p")
  done; done; done; done
fi

# ---- prerequisites -----------------------------------------------------------
[ -x "$VITKIT" ] || die "$VITKIT not found: build first (make build), or set VITKIT"
"$PYTHON" -c 'import torch, torchvision' 2>/dev/null || die "$PYTHON lacks torch/torchvision (apt-get install python3-torch python3-torchvision)"
stamp=$(date +%Y%m%d-%H%M%S)
out="$here/results/$stamp"
cache="$here/results/cache"
mkdir -p "$out/raw" "$cache"

ensure_ort() {
  command -v node >/dev/null || die "node not found (apt-get install nodejs npm)"
  if ! (cd "$here" && node -e "require('onnxruntime-node')" 2>/dev/null); then
    echo "run.sh: installing onnxruntime-node (npm install --ignore-scripts)" >&2
    (cd "$here" && npm install --ignore-scripts --no-audit --no-fund >&2)
  fi
}

# OpenBLAS for the pytorch-openblas runtime: the Debian .deb unpacked under the cache.
openblas_dir="$cache/openblas/usr/lib/x86_64-linux-gnu/openblas-pthread"
ensure_openblas() {
  [ -e "$openblas_dir/libblas.so.3" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  if (cd "$tmp" && apt-get download libopenblas0-pthread >/dev/null 2>&1); then
    dpkg-deb -x "$tmp"/libopenblas0-pthread_*.deb "$cache/openblas"
  fi
  rm -rf "$tmp"
  [ -e "$openblas_dir/libblas.so.3" ]
}

if [ -z "$runtimes" ]; then
  runtimes="vitkit,onnxruntime,pytorch,pytorch-openblas"
  [ $train = 1 ] && runtimes="vitkit,pytorch,pytorch-openblas"
  if ! ensure_openblas; then
    echo "run.sh: OpenBLAS (libopenblas0-pthread) unavailable: no pytorch-openblas column" >&2
    runtimes=${runtimes/,pytorch-openblas/}
  fi
fi
IFS=, read -ra rts <<< "$runtimes"
for rt in "${rts[@]}"; do
  case "$rt" in
    vitkit|pytorch) ;;
    onnxruntime) [ $train = 1 ] && die "--train: onnxruntime does not train"; ensure_ort ;;
    pytorch-openblas) ensure_openblas || die "pytorch-openblas: cannot get libopenblas0-pthread" ;;
    *) die "--runtimes: unknown runtime '$rt' (vitkit, onnxruntime, pytorch, pytorch-openblas)" ;;
  esac
done

# ---- models and ONNX files ---------------------------------------------------
# The weights file every runtime loads for model name $1.
model_file() {
  local m=$1
  case "$m" in
    fmnist|vit-tiny-fmnist)
      if [ -f "$root/models/vit-tiny-fmnist.safetensors" ]; then echo "$root/models/vit-tiny-fmnist.safetensors"; return; fi
      local f="$cache/vit-tiny-fmnist-random.safetensors"
      [ -f "$f" ] || (cd "$here" && "$PYTHON" weights.py vit_b_16 --config "$root/configs/vit-tiny-fmnist.toml" \
                        --vitkit "$VITKIT" -o "$f") >&2
      echo "$f" ;;
    *.safetensors) [ -f "$m" ] || die "--model: no such file $m"; (cd "$(dirname "$m")" && echo "$PWD/$(basename "$m")") ;;
    *)
      local f="$cache/$m-random.safetensors"
      [ -f "$f" ] || (cd "$here" && "$PYTHON" weights.py "$m" --vitkit "$VITKIT" -o "$f") >&2 || die "--model: cannot make $m"
      echo "$f" ;;
  esac
}

# The ONNX file for (weights $1, batch $2, precision $3); status 3 when export_onnx.py lacks the precision.
onnx_file() {
  local f=$1 b=$2 p=$3
  local o="$cache/$(basename "${f%.safetensors}")-$p-b$b.onnx"
  if [ ! -f "$o" ] || [ "$f" -nt "$o" ]; then
    echo "run.sh: exporting $o" >&2
    (cd "$here" && "$PYTHON" -W ignore export_onnx.py "$f" --batch "$b" --precision "$p" -o "$o" >/dev/null 2>"$o.log") ||
      { local s=$?; [ $s = 3 ] && return 3; cat "$o.log" >&2; die "ONNX export failed for $f"; }
  fi
  echo "$o"
}

# vitkit's int8 model for weights $1: `vitkit compress $1 --pass quantize:bits=8`, cached
# (made again when the weights or the vitkit binary are newer).
int8_file() {
  local f=$1
  local o="$cache/$(basename "${f%.safetensors}")-int8.safetensors"
  if [ ! -f "$o" ] || [ "$f" -nt "$o" ] || [ "$VITKIT" -nt "$o" ]; then
    echo "run.sh: compressing $o" >&2
    "$VITKIT" compress "$f" --pass quantize:bits=8 -o "$o" >"$o.log" 2>&1 || { cat "$o.log" >&2; die "vitkit compress failed for $f"; }
  fi
  echo "$o"
}

# ---- one burst of one runtime --------------------------------------------------
# burst RUNTIME FILE BATCH THREADS PRECISION OUT: writes the runtime's JSON to OUT;
# returns 3 when the runtime lacks the precision.
burst() {
  local rt=$1 f=$2 b=$3 t=$4 p=$5 o=$6
  local mode_flag="" torch_script=torch_bench.py
  [ $train = 1 ] && { mode_flag=--train; torch_script=torch_train_bench.py; }
  case "$rt" in
    vitkit)
      local vp=$p
      # int8: the compressed file (made before the rounds), run as loaded
      if [ "$p" = int8 ]; then [ $train = 1 ] && return 3; f=$(int8_file "$f"); vp=fp32; fi
      # shellcheck disable=SC2086
      env $VITKIT_ENV "$VITKIT" bench "$f" --batch "$b" --threads "$t" --precision "$vp" --reps "$reps" \
        --warmup "$warmup" $mode_flag --json -q > "$o" 2> "$o.err" || { [ $? = 2 ] && return 3; return 1; } ;;
    onnxruntime)
      local x
      x=$(onnx_file "$f" "$b" "$p") || return $?
      (cd "$here" && node ort_bench.js "$x" --batch "$b" --threads "$t" --reps "$reps" --warmup "$warmup") \
        > "$o" 2> "$o.err" ;;
    pytorch|pytorch-openblas)
      local extra=()
      [ "$rt" = pytorch-openblas ] && extra=(LD_LIBRARY_PATH="$openblas_dir" OPENBLAS_NUM_THREADS="$t")
      [ -n "${TORCH_QENGINE:-}" ] && extra+=(TORCH_QENGINE="$TORCH_QENGINE")
      (cd "$here" && env OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS="$t" "${extra[@]}" "$PYTHON" $torch_script "$f" \
        --batch "$b" --threads "$t" --precision "$p" --reps "$reps" --warmup "$warmup") > "$o" 2> "$o.err" ;;
  esac
}

# ---- the rounds ----------------------------------------------------------------
read -r l1 l5 l15 _ < /proc/loadavg
echo "run.sh: ${#cases[@]} case(s) x ${#rts[@]} runtime(s) x $rounds round(s) of $reps reps; load average $l1 $l5 $l15" >&2
printf 'model\tfile\tmode\tbatch\tthreads\tprecision\truntime\tround\tstatus\traw\n' > "$out/runs.tsv"
files=()
for c in "${cases[@]}"; do
  read -r m b t p <<< "$c"
  files+=("$(model_file "$m")")
  # the int8 model and ONNX files are made here, not in the first round's bursts
  if [ "$p" = int8 ] && [ $train = 0 ]; then
    for rt in "${rts[@]}"; do
      case "$rt" in
        vitkit) int8_file "${files[-1]}" >/dev/null ;;
        onnxruntime) onnx_file "${files[-1]}" "$b" "$p" >/dev/null || true ;;
      esac
    done
  fi
done
mode=infer; [ $train = 1 ] && mode=train
for ((r = 1; r <= rounds; ++r)); do
  for i in "${!cases[@]}"; do
    read -r m b t p <<< "${cases[$i]}"
    f=${files[$i]}
    n=${#rts[@]}
    for ((k = 0; k < n; ++k)); do
      rt=${rts[$(( (k + r - 1) % n ))]}
      o="$out/raw/$(basename "$m" .safetensors)-$mode-b$b-t$t-$p-$rt-r$r.json"
      status=ok
      burst "$rt" "$f" "$b" "$t" "$p" "$o" || { s=$?; if [ $s = 3 ]; then status=n/a; else status=failed; fi; }
      [ $status = failed ] && echo "run.sh: $rt failed on $m batch $b threads $t $p (see $o.err)" >&2
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$m" "$f" "$mode" "$b" "$t" "$p" "$rt" "$r" "$status" "$o" \
        >> "$out/runs.tsv"
    done
  done
  echo "run.sh: round $r/$rounds done" >&2
done
read -r e1 e5 e15 _ < /proc/loadavg

cat > "$out/meta.json" <<EOF
{"started": "$stamp", "load_start": [$l1, $l5, $l15], "load_end": [$e1, $e5, $e15],
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')", "cores": $(nproc),
 "rounds": $rounds, "reps": $reps, "warmup": $warmup, "train": $train, "vitkit_env": "$VITKIT_ENV",
 "torch_qengine": "${TORCH_QENGINE:-onednn}",
 "command": "bench/peers/run.sh${models:+ --model $models}${batches:+ --batch $batches}${threads:+ --threads $threads}${precisions:+ --precision $precisions} --rounds $rounds --reps $reps --warmup $warmup${runtimes:+ --runtimes $runtimes}$([ $train = 1 ] && echo ' --train')"}
EOF
"$PYTHON" "$here/compare.py" "$out"
