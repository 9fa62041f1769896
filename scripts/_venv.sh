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
        "$VENV/bin/python" -c "import edgeproxy, aiohttp, diskcache, yaml" 
        touch "$stamp"
    fi
}
