# Shared shell set-up sourced by the project's scripts: cache locations and the
# environment every cargo and python step runs with. Sourcing has no side effects
# beyond exporting variables.

NUDGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NUDGE_CACHE="${NUDGE_CACHE:-$HOME/.cache/nudge}"
export NUDGE_ROOT NUDGE_CACHE

# Build output lives outside the clone so a fresh clone (CI) reuses it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$NUDGE_CACHE/target}"
export NUDGE_TOOLS="$NUDGE_CACHE/tools"
export NUDGE_VENV="$NUDGE_CACHE/venv"
export NUDGE_TOOLS_VENV="$NUDGE_CACHE/tools-venv"
export PATH="$NUDGE_TOOLS/bin:$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m[nudge]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[nudge]\033[0m %s\n' "$*" >&2; exit 1; }

# Location of libonnxruntime.so inside the venv's onnxruntime wheel.
ort_dylib() {
    local lib
    lib="$(ls "$NUDGE_VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1)"
    [ -n "$lib" ] && printf '%s\n' "$lib"
}

# Environment for the binaries and tests, after setup has run.
export_runtime_env() {
    local lib
    lib="$(ort_dylib)" || die "ONNX Runtime not found in $NUDGE_VENV; run scripts/setup"
    export ORT_DYLIB_PATH="$lib"
    export NUDGE_TANSU_BIN="$NUDGE_TOOLS/bin/tansu"
    export NUDGE_NODE_MODULES="$NUDGE_CACHE/node/node_modules"
    export NUDGE_BUF_BIN="$NUDGE_CACHE/node/node_modules/.bin/buf"
    # The cell binary the local provisioner starts dedicated cells with (built by scripts/test).
    export NUDGE_CELL_BIN="$CARGO_TARGET_DIR/debug/nudge-cell"
    export NUDGE_BAO_BIN="$NUDGE_TOOLS_VENV/bin/bao"
    export NUDGE_LOCALSTRIPE_BIN="$NUDGE_TOOLS_VENV/bin/localstripe"
    export NUDGE_TOOLS_PYTHON="$NUDGE_TOOLS_VENV/bin/python"
}
