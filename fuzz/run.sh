#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang (AddressSanitizer + UBSan) and runs
# each one for a bounded time on a copy of its seed corpus.
#   fuzz/run.sh [SECONDS_PER_HARNESS] [BUILD_DIR]     (defaults: 60, build-fuzz)
# New inputs go to BUILD_DIR/corpus/<name>/ (the committed seeds are not
# touched); a crash, sanitizer report, leak or timeout leaves its input in
# BUILD_DIR/artifacts/ and makes the script exit non-zero.
set -euo pipefail
SECONDS_EACH=${1:-60}
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${2:-$SRC/build-fuzz}
JOBS=${JOBS:-2}

if ! command -v clang++ >/dev/null; then
  echo "fuzz/run.sh: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi
mkdir -p "$BUILD"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then  # standalone (an existing -DVITKIT_FUZZ=ON tree works too)
  CC=clang CXX=clang++ cmake -S "$SRC/fuzz" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$BUILD/fuzz_configure.log" 2>&1 ||
    { cat "$BUILD/fuzz_configure.log" >&2; exit 1; }
fi
cmake --build "$BUILD" --target fuzz_all -j"$JOBS" >"$BUILD/fuzz_build.log" 2>&1 || { tail -50 "$BUILD/fuzz_build.log" >&2; exit 1; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$BUILD/artifacts"
status=0
for exe in $(find "$BUILD" -maxdepth 2 -type f -executable -name 'fuzz_*' | sort); do
  name=$(basename "$exe"); name=${name#fuzz_}
  work="$BUILD/corpus/$name"
  mkdir -p "$work"
  log="$BUILD/fuzz_$name.log"
  if "$exe" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="$BUILD/artifacts/${name}-" "$work" "$SRC/fuzz/corpus/$name" >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    echo "fuzz $name: ok, $runs runs in ${SECONDS_EACH}s, $cov"
  else
    status=1
    echo "fuzz $name: FAILED (log $log, artifacts in $BUILD/artifacts/)"
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -20
  fi
done
exit $status
