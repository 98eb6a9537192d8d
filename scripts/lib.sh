# Shared helpers for the scripts in this folder (sourced, not run).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# need_pkg BINARY DEBIAN_PACKAGE: installs the package with apt-get when run
# as root, otherwise stops with the exact command to run.
need_pkg() {
  local bin="$1" pkg="$2"
  if command -v "$bin" >/dev/null 2>&1 || [ -x "$bin" ]; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing $pkg (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null; } \
      || die "could not install $pkg"
    # Debian starts the packaged redis service; the tests and up.sh run their own.
    if [ "$pkg" = redis-server ]; then
      (systemctl disable --now redis-server || service redis-server stop) >/dev/null 2>&1 || true
    fi
  else
    die "$bin is missing. Install it with:  sudo apt-get install -y $pkg"
  fi
}

need_tools() {
  command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain (https://rustup.rs)"
  command -v node >/dev/null || die "node is missing: install Node.js 20 or newer"
  command -v npm >/dev/null || die "npm is missing: install Node.js 20 or newer (it brings npm)"
}

# Installs the web client's dependencies when the lockfile changed.
web_deps() {
  local stamp="$ROOT/web/node_modules/.lock-stamp"
  if [ ! -f "$stamp" ] || ! cmp -s "$ROOT/web/package-lock.json" "$stamp"; then
    say "installing web dependencies (npm ci)"
    (cd "$ROOT/web" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
    cp "$ROOT/web/package-lock.json" "$stamp"
  fi
}

# wait_http URL [SECONDS]: waits until URL answers 200.
wait_http() {
  local url="$1" secs="${2:-30}" i
  for ((i = 0; i < secs * 10; i++)); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# wait_log FILE TEXT [SECONDS]: waits until FILE contains TEXT.
wait_log() {
  local file="$1" text="$2" secs="${3:-30}" i
  for ((i = 0; i < secs * 10; i++)); do
    if grep -qF "$text" "$file" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}
