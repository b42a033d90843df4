# Shared by the shell runners of the Python-based suites (sourced, not run):
#   sidecar_bin ROOT        prints SIDECAR_BIN, else target/debug, else target/release
#                           under ROOT; exits 2 when there is none
#   python_venv VENV REQS   creates VENV if missing, installs the pinned REQS into it
sidecar_bin() {
    local root="$1" bin="${SIDECAR_BIN:-}" profile
    if [ -z "$bin" ]; then
        for profile in debug release; do
            if [ -x "$root/target/$profile/durabletask-sidecar" ]; then
                bin="$root/target/$profile/durabletask-sidecar"
                break
            fi
        done
    fi
    if [ -z "$bin" ] || [ ! -x "$bin" ]; then
        echo "sidecar binary not found: set SIDECAR_BIN or run 'cargo build'" >&2
        exit 2
    fi
    printf '%s\n' "$bin"
}

python_venv() {
    local venv="$1" requirements="$2"
    if [ ! -x "$venv/bin/python" ]; then
        "${PYTHON:-python3}" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
}
