#!/usr/bin/env bash
# Runs Flotilla's fuzz targets with cargo-fuzz (libFuzzer) on the stable toolchain.
#
#   fuzz/run.sh <target|all> <seconds> [libFuzzer flags...]
#   fuzz/run.sh build            # only build every target
#   fuzz/run.sh list             # the targets
#
# Each target runs for <seconds> on its working corpus (fuzz/corpus/<target>, not committed)
# seeded from fuzz/seeds/<target> (committed). A crash stops that target, leaves the input in
# fuzz/artifacts/<target>/ and makes the script fail after the remaining targets ran; a
# summary line per target gives the executions and executions per second. See docs/fuzzing.md.
#
# cargo-fuzz is installed from crates.io when missing. With `--sanitizer none` every flag
# cargo-fuzz passes to rustc is a stable -C flag, so the stable toolchain builds the targets as
# it is. No sanitizer is used by default (the code under test forbids `unsafe`); debug
# assertions and overflow checks are on (-a), so an integer overflow is a crash. A sanitizer
# (FUZZ_BUILD_FLAGS="--sanitizer address -a") needs the unstable -Zsanitizer: the script then
# sets RUSTC_BOOTSTRAP=1, which stable rustc honours (and which makes cargo rebuild everything).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
readonly TARGETS=(quantity duration spec_validation sandbox_patch sandbox_selector gateway_body)
# Overridable, e.g. FUZZ_BUILD_FLAGS="--sanitizer none -a --dev" for a faster, unoptimised build.
read -r -a BUILD_FLAGS <<<"${FUZZ_BUILD_FLAGS:---sanitizer none -a}"
if [[ " ${BUILD_FLAGS[*]} " != *" --sanitizer none "* && " ${BUILD_FLAGS[*]} " != *" -s none "* ]]; then
  export RUSTC_BOOTSTRAP=1
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

usage() {
  sed -n '4,7p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
  exit 2
}

ensure_cargo_fuzz() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
  fi
}

[[ $# -ge 1 ]] || usage
case "$1" in
  list)
    printf '%s\n' "${TARGETS[@]}"
    exit 0
    ;;
  build)
    ensure_cargo_fuzz
    exec cargo fuzz build "${BUILD_FLAGS[@]}"
    ;;
  all) selected=("${TARGETS[@]}") ;;
  *)
    if [[ ! " ${TARGETS[*]} " == *" $1 "* ]]; then
      echo "unknown target $1; one of: all ${TARGETS[*]}" >&2
      exit 2
    fi
    selected=("$1")
    ;;
esac
[[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || usage
seconds="$2"
shift 2

ensure_cargo_fuzz
cargo fuzz build "${BUILD_FLAGS[@]}"

summary=()
failed=()
for target in "${selected[@]}"; do
  mkdir -p "corpus/${target}" "seeds/${target}"
  log="$(mktemp)"
  printf '\n==> fuzz %s for %ss\n' "$target" "$seconds"
  status=0
  # -max_len: the bodies and documents the parsers meet are small; 4 KiB keeps runs fast.
  cargo fuzz run "${BUILD_FLAGS[@]}" "$target" "corpus/${target}" "seeds/${target}" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    "$@" >"$log" 2>&1 || status=$?
  grep -E '^(#[0-9]+ +(INITED|DONE)|==[0-9]+==|thread .* panicked|SUMMARY|Done [0-9]+ runs)' "$log" || true
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
  corpus="$(find "corpus/${target}" -type f | wc -l)"
  if [[ "$status" -ne 0 ]]; then
    failed+=("$target")
    grep -E -A 12 'panicked|ERROR: libFuzzer' "$log" | head -n 40 || true
    grep -E 'Test unit written to|artifact_prefix' "$log" || true
  fi
  summary+=("$(printf '%-18s %10s execs %8s execs/s %6s corpus  %s' "$target" "${execs:-?}" \
    "${rate:-?}" "$corpus" "$([[ "$status" -eq 0 ]] && echo ok || echo "FAILED (exit ${status})")")")
  rm -f "$log"
done

printf '\n==> fuzz summary (%ss per target)\n' "$seconds"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  printf 'crashes in: %s (inputs in fuzz/artifacts/)\n' "${failed[*]}" >&2
  exit 1
fi
