# shellcheck shell=bash
# Sourced by scripts/start-hub and scripts/test: creates (once) and activates the cached
# Python venv and the npm packages, then puts both on PATH.  Nothing is assumed installed
# beyond python3 (>= 3.11), node and npm.
#
#   GPUHUB_CACHE   where the venv and node_modules are cached (default ~/.cache/gpuhub;
#                  /var/cache/gpuhub as root: users' servers and jobs run from this venv as
#                  their own accounts, so it must be readable by every account, which a
#                  folder under /root is not)
set -euo pipefail

GPUHUB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$(id -u)" = 0 ]; then
  GPUHUB_CACHE="${GPUHUB_CACHE:-/var/cache/gpuhub}"
else
  GPUHUB_CACHE="${GPUHUB_CACHE:-$HOME/.cache/gpuhub}"
fi
export GPUHUB_ROOT GPUHUB_CACHE
mkdir -p "$GPUHUB_CACHE"

_gpuhub_log() { printf '[gpuhub] %s\n' "$*" >&2; }

# A Python >= 3.11 with venv; as root, one that every account can run (servers and jobs
# run as per-user accounts from the venv built on it): an interpreter under /root is not.
_gpuhub_python() {
  local py path
  for py in python3.13 python3.12 python3.11 python3 /usr/bin/python3; do
    path="$(command -v "$py" 2>/dev/null)" || continue
    "$path" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || continue
    if [ "$(id -u)" = 0 ]; then
      path="$("$path" -c 'import sys; print(sys.executable)')"
      (cd / && runuser -u nobody -- "$path" -c 'import venv') >/dev/null 2>&1 || continue
    fi
    echo "$path"; return 0
  done
  _gpuhub_log "Python >= 3.11 (with venv) is required$([ "$(id -u)" = 0 ] && echo ', runnable by every account (not one under /root)') (found none on PATH)"; return 1
}

# gpuhub_venv REQFILE...: a venv keyed by the hash of the requirement files.
gpuhub_venv() {
  local py key venv
  py="$(_gpuhub_python)"
  key="$( (cat "$@"; "$py" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
  venv="$GPUHUB_CACHE/venv-$key"
  if [ ! -f "$venv/.complete" ]; then
    _gpuhub_log "creating Python environment $venv (first run only)"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    local args=()
    for f in "$@"; do args+=(-r "$f"); done
    "$venv/bin/python" -m pip install -q "${args[@]}"
    touch "$venv/.complete"
  fi
  # The project itself: editable, no dependencies (cheap, done on every run so a
  # cached venv always points at this checkout).
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$GPUHUB_ROOT" 2>/dev/null ||
    "$venv/bin/python" -m pip install -q --no-deps -e "$GPUHUB_ROOT"
  export VIRTUAL_ENV="$venv"
  export PATH="$venv/bin:$PATH"
}

# code-server (VS Code in the browser) builds native modules when npm installs it (node-gyp:
# a C/C++ toolchain, make, pkg-config, Kerberos headers for its `kerberos` module) and its
# search tool, ripgrep, would be downloaded from GitHub by @vscode/ripgrep's install script:
# Debian's ripgrep (the same 13.0.0) stands in for it.  As root, missing Debian packages are
# installed.
_gpuhub_code_server_tools() {
  local missing=()
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  command -v make >/dev/null 2>&1 || missing+=(make)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  [ -f /usr/include/gssapi/gssapi.h ] || missing+=(libkrb5-dev)
  command -v rg >/dev/null 2>&1 || missing+=(ripgrep)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    _gpuhub_log "code-server (VS Code in the browser) needs: ${missing[*]} (Debian packages)"; return 1
  fi
  _gpuhub_log "installing ${missing[*]} (Debian packages, to build code-server's native modules)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# _gpuhub_ripgrep_cache DIR: put the local rg where @vscode/ripgrep (1.15.11, the version
# code-server 4.100.3 locks) looks for an earlier download before it goes to GitHub:
# DIR/vscode-ripgrep-cache-1.15.11/ripgrep-v13.0.0-10-<target>.tar.gz.  Use DIR as TMPDIR.
_gpuhub_ripgrep_cache() {
  local target
  case "$(uname -m)" in
    x86_64) target=x86_64-unknown-linux-musl ;;
    aarch64) target=aarch64-unknown-linux-musl ;;
    *) return 0 ;;
  esac
  mkdir -p "$1/vscode-ripgrep-cache-1.15.11"
  tar czf "$1/vscode-ripgrep-cache-1.15.11/ripgrep-v13.0.0-10-$target.tar.gz" \
    -C "$(dirname "$(command -v rg)")" rg
}

# gpuhub_node: configurable-http-proxy and code-server from scripts/node/package.json, in a
# folder keyed by it and its lock file, readable by every account (users' servers start
# code-server from it).
gpuhub_node() {
  command -v npm >/dev/null 2>&1 || { _gpuhub_log "node and npm are required"; return 1; }
  local key dir tmp
  key="$(cat "$GPUHUB_ROOT/scripts/node/package.json" "$GPUHUB_ROOT/scripts/node/package-lock.json" 2>/dev/null | sha256sum | cut -c1-16)"
  dir="$GPUHUB_CACHE/node-$key"
  if [ ! -f "$dir/.complete" ]; then
    _gpuhub_log "installing npm packages into $dir (first run only)"
    _gpuhub_code_server_tools
    rm -rf "$dir"; mkdir -p "$dir"
    cp "$GPUHUB_ROOT/scripts/node/package.json" "$dir/"
    [ -f "$GPUHUB_ROOT/scripts/node/package-lock.json" ] && cp "$GPUHUB_ROOT/scripts/node/package-lock.json" "$dir/"
    tmp="$(mktemp -d)"
    _gpuhub_ripgrep_cache "$tmp"
    # code-server's install script refuses root without unsafe-perm, and runs `npx node-gyp`
    # for node-pty (yes: fetch it from the npm registry without asking)
    (umask 022 && cd "$dir" && export TMPDIR="$tmp" npm_config_unsafe_perm=true npm_config_yes=true &&
      { npm ci --no-audit --no-fund --loglevel=error 2>/dev/null || npm install --no-audit --no-fund --loglevel=error; }) ||
      { rm -rf "$tmp"; return 1; }
    rm -rf "$tmp"
    touch "$dir/.complete"
  fi
  export PATH="$dir/node_modules/.bin:$PATH"
}

# gpuhub_torch: PyTorch from PyPI (it brings its CUDA libraries, several GB) installed once
# into its own cached folder and linked into the active venv with a .pth file, so changing
# another requirement never re-installs it.  Used by the jobs tests (DDP on CPU with gloo)
# and the image smoke test.
GPUHUB_TORCH_VERSION="${GPUHUB_TORCH_VERSION:-2.15.0}"
gpuhub_torch() {
  local pyver dir site
  pyver="$(python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  dir="$GPUHUB_CACHE/torch-$GPUHUB_TORCH_VERSION-py$pyver"
  if [ ! -f "$dir/.complete" ]; then
    _gpuhub_log "installing torch==$GPUHUB_TORCH_VERSION into $dir (first run only, several GB)"
    rm -rf "$dir"
    python -m pip install -q --target "$dir" "torch==$GPUHUB_TORCH_VERSION"
    touch "$dir/.complete"
  fi
  site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$dir" > "$site/gpuhub-torch.pth"
}

# gpuhub_lab_extension: the JupyterLab extension (extensions/gpuhub-lab) built and installed
# into the active venv, again only when its sources change.
gpuhub_lab_extension() {
  local key marker
  key="$(cd "$GPUHUB_ROOT/extensions/gpuhub-lab" &&
    find . -path ./node_modules -prune -o -path ./lib -prune -o -path ./gpuhub_lab/labextension -prune \
      -o -type f \( -name '*.ts' -o -name '*.tsx' -o -name '*.py' -o -name '*.json' -o -name '*.css' -o -name '*.toml' \) -print0 |
    sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
  marker="$VIRTUAL_ENV/.gpuhub-lab-$key"
  if [ ! -f "$marker" ]; then
    _gpuhub_log "building and installing the JupyterLab extension (when its sources change)"
    python -m pip install -q --no-build-isolation "$GPUHUB_ROOT/extensions/gpuhub-lab"
    rm -f "$VIRTUAL_ENV"/.gpuhub-lab-*
    touch "$marker"
  fi
}

# gpuhub_images [TARGET...]: gpuhub's images built for real by images/build.py (a Debian base
# made with debootstrap, a private dockerd started and stopped by the script, nothing
# pulled), cached under $GPUHUB_CACHE/images.  Installs docker.io and debootstrap (Debian
# packages) when missing.  Needs root (dockerd, debootstrap).
gpuhub_images_tools() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || { _gpuhub_log "images: run as root (dockerd, debootstrap)"; return 1; }
  _gpuhub_log "installing ${missing[*]} (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

gpuhub_images() {
  gpuhub_images_tools
  python "$GPUHUB_ROOT/images/build.py" ${1:+--targets "$@"}
}
