# shellcheck shell=bash
# Sourced by scripts/test and scripts/run: go to the repo root, make sure uv exists and is pointed
# at the system Python 3.11, and sync the locked environment. Sets UV to the uv binary to call.

sk_die() {
    echo "error: $*" >&2
    exit 1
}

sk_note() {
    echo "==> $*" >&2
}

# Work from any current directory: everything below is relative to the repo root.
SK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$SK_ROOT" || sk_die "cannot cd to $SK_ROOT"

sk_find_uv() {
    local candidate
    if candidate="$(command -v uv 2>/dev/null)"; then
        UV="$candidate"
        return 0
    fi
    for candidate in "${HOME:-/root}/.local/bin/uv" "${HOME:-/root}/.cargo/bin/uv"; do
        if [ -x "$candidate" ]; then
            UV="$candidate"
            return 0
        fi
    done
    # pip may have put uv where PATH does not look; the package knows where its binary is.
    if candidate="$(python3 -c 'import uv, sys; sys.stdout.write(uv.find_uv_bin())' 2>/dev/null)" \
        && [ -x "$candidate" ]; then
        UV="$candidate"
        return 0
    fi
    return 1
}

sk_ensure_uv() {
    sk_find_uv && return 0
    if ! python3 -m pip --version >/dev/null 2>&1; then
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            sk_note "installing python3-pip (needed to install uv)"
            apt-get update -q >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pip >/dev/null
        else
            sk_die "uv is missing and python3 has no pip; install uv (https://docs.astral.sh/uv/)"
        fi
    fi
    sk_note "installing uv with pip"
    # Debian marks its Python externally managed (PEP 668); uv is a self-contained binary, so a
    # user-site install cannot disturb the system packages. Inside a virtualenv --user is refused:
    # then install into it.
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check --user uv \
        2>/dev/null \
        || PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check uv \
        || sk_die "pip could not install uv"
    sk_find_uv || sk_die "uv was installed but cannot be found"
}

sk_sync() {
    sk_ensure_uv
    # No managed Python downloads (they are not reachable here): use the system's 3.11. Resolve
    # shims (pyenv) to the real interpreter so uv keeps an existing .venv instead of rebuilding it.
    export UV_PYTHON_DOWNLOADS=never
    if [ -z "${UV_PYTHON:-}" ]; then
        local py
        py="$(command -v python3.11)" || sk_die "python3.11 not found (Debian 12: apt-get install python3)"
        UV_PYTHON="$("$py" -c 'import sys; print(sys.executable)')" || sk_die "$py does not run"
        export UV_PYTHON
    fi
    sk_note "uv sync --frozen (Python: $UV_PYTHON)"
    "$UV" sync --frozen || sk_die "uv sync failed"
}
