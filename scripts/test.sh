#!/usr/bin/env bash
# scripts/test.sh — every check the project has: setup, formatting, lints, the whole test suite.
#
# Exits non-zero on the first failure. OXBLOB_FULL=1 in the environment turns on the exhaustive
# sweeps (crash points, long property runs); it is passed through to the tests as is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

step "setup"
./scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doc tests; run them first so the suite's summary comes last.
    step "doc tests"
    cargo test --workspace --doc
fi

if [[ ${OXBLOB_FULL:-0} == 1 ]]; then
    step "tests (OXBLOB_FULL=1: exhaustive sweeps on)"
else
    step "tests"
fi
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi

step "all checks passed"
