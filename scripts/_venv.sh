# Sourced by scripts/*: create or refresh the project's virtual environment.
# ensure_venv EXTRA  -> installs the package editable with [EXTRA]; sets $VENV.
VENV="${EDGEPROXY_VENV:-$PWD/.venv}"

ensure_venv() {
    local extra="$1"
    local stamp="$VENV/.installed-$extra"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "== creating virtual environment in $VENV"
        python3 -m venv "$VENV"
    fi
    # Reinstall when pyproject.toml changed since the last install.
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "== installing edgeproxy[$extra] into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
        "$VENV/bin/python" -m pip install -q -e ".[$extra]" 2>&1 | grep -v '^WARNING: Location' || true
        "$VENV/bin/python" -c "import edgeproxy, aiohttp, diskcache, yaml, redis"
        touch "$stamp"
    fi
}

# ensure_compiled required|optional: compile the hot path with mypyc (the
# modules edgeproxy/compiled.py lists), in place, unless the build in place
# is of their current sources. EDGEPROXY_PURE=1 removes any build instead
# (the plain sources run). "required" (scripts/test): a failed build fails;
# "optional" (scripts/run): it says so and runs the plain sources.
ensure_compiled() {
    local mode="$1"
    local check=(env PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" edgeproxy/compiled.py)
    if [ "${EDGEPROXY_PURE:-}" = 1 ]; then
        "${check[@]}" --clean >/dev/null
        echo "== EDGEPROXY_PURE=1: running the plain sources, not compiled"
        return 0
    fi
    if "${check[@]}" --current; then
        return 0
    fi
    echo "== compiling the hot path with mypyc (edgeproxy/compiled.py; about two minutes)"
    "${check[@]}" --clean >/dev/null
    local log="$VENV/compile.log"
    if EDGEPROXY_COMPILE=1 "$VENV/bin/python" setup.py -q build_ext --inplace >"$log" 2>&1 \
        && "${check[@]}" --current; then
        return 0
    fi
    grep -E "error" "$log" | head -20 || tail -20 "$log"
    "${check[@]}" --clean >/dev/null
    if [ "$mode" = required ]; then
        echo "== compiling failed (log: $log)" >&2
        return 1
    fi
    echo "== compiling failed (log: $log): running the plain sources" >&2
    return 0
}

# ensure_redis_server: the cluster tests (tests/e2e/test_cluster*.py) start their
# own redis-server processes on loopback; install Debian's package when missing.
# Failure is tolerated: those tests then skip, saying why.
ensure_redis_server() {
    if command -v redis-server >/dev/null 2>&1; then
        return 0
    fi
    echo "== installing redis-server (for the cluster tests)"
    if command -v apt-get >/dev/null 2>&1; then
        local sudo=""
        if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; fi
        { $sudo apt-get update -qq && \
          DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server; } \
            >/dev/null 2>&1 || true
    fi
    if command -v redis-server >/dev/null 2>&1; then
        return 0
    fi
    echo "== redis-server unavailable: the cluster tests will be skipped"
    return 0
}

# ensure_chromium: the dashboard test (tests/e2e/test_dashboard.py) drives
# Debian's chromium through Playwright (Playwright's own browser download is
# not used); install the package when missing. Failure is tolerated: those
# tests then skip, saying why.
ensure_chromium() {
    if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
        return 0
    fi
    echo "== installing chromium (for the dashboard browser test)"
    if command -v apt-get >/dev/null 2>&1; then
        local sudo=""
        if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; fi
        { $sudo apt-get update -qq && \
          DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } \
            >/dev/null 2>&1 || true
    fi
    if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
        return 0
    fi
    echo "== chromium unavailable: the dashboard browser tests will be skipped"
    return 0
}
