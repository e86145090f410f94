#!/usr/bin/env bash
# Install code-server (VS Code in the browser) from npm into /opt/code-server, with the
# Node.js it runs on, for the `codeserver` stage of images/singleuser/Dockerfile.
#
#   code-server.sh VERSION [github|debian]
#
# npm builds code-server's native modules (node-gyp) in the stage that runs this; the image
# gets /opt/code-server only: the package, a copy of this stage's `node` (code-server
# requires the exact Node major it declares, so it must not run on whatever `node` a user
# installs) and bin/code-server, which runs the package with that node.
#
# ripgrep (VS Code's search): the @vscode/ripgrep release that code-server's lock file pins
# downloads its binary from GitHub when installed.  `debian` puts Debian's ripgrep (from
# PATH) where that install script looks for an earlier download: for a builder that cannot
# reach GitHub (images/build.py).
set -euo pipefail
version="$1"
ripgrep="${2:-github}"
prefix=/opt/code-server
work="$(mktemp -d)"

cd "$work"
npm pack --silent "code-server@${version}" >/dev/null
tarball="$work/code-server-${version}.tgz"

json() {  # json FILE-IN-TARBALL TARBALL EXPRESSION: a value read with node
  tar -xzOf "$2" "$1" | node -e "let d=JSON.parse(require('fs').readFileSync(0,'utf8'));console.log($3)"
}

if [ "$ripgrep" = debian ]; then
  rg_pkg="$(json package/lib/vscode/npm-shrinkwrap.json "$tarball" \
    'd.packages["node_modules/@vscode/ripgrep"].version')"
  npm pack --silent "@vscode/ripgrep@${rg_pkg}" >/dev/null
  rg_asset="$(tar -xzOf "vscode-ripgrep-${rg_pkg}.tgz" package/lib/postinstall.js |
    sed -n "s/^const VERSION = '\(.*\)';.*/\1/p")"
  [ -n "$rg_asset" ] || { echo "code-server.sh: @vscode/ripgrep ${rg_pkg}: no release name" >&2; exit 1; }
  case "$(uname -m)" in
    x86_64) target=x86_64-unknown-linux-musl ;;
    aarch64) target=aarch64-unknown-linux-musl ;;
    *) echo "code-server.sh: no ripgrep target for $(uname -m)" >&2; exit 1 ;;
  esac
  cache="$work/tmp/vscode-ripgrep-cache-${rg_pkg}"
  mkdir -p "$cache"
  tar -czf "$cache/ripgrep-${rg_asset}-${target}.tar.gz" -C "$(dirname "$(command -v rg)")" rg
  export TMPDIR="$work/tmp"
  echo "code-server.sh: @vscode/ripgrep ${rg_pkg} (release ${rg_asset}) gets Debian's $(rg --version | sed -n 1p)"
fi

# node-gyp builds against this Node's own headers when it has them (the official image
# does) instead of downloading them from nodejs.org.
nodedir="$(dirname "$(dirname "$(command -v node)")")"
if [ -f "$nodedir/include/node/common.gypi" ]; then export npm_config_nodedir="$nodedir"; fi

# A project folder, not `npm install --global`: code-server's install script runs `npm
# install` in lib/vscode, which would inherit the global flag and reinstall (delete)
# code-server itself.  The install script refuses root without unsafe-perm and runs `npx
# node-gyp`.
mkdir -p "$prefix/bin"
cd "$prefix"
npm_config_unsafe_perm=true npm_config_yes=true \
  npm install --omit=dev --no-audit --no-fund --no-save --loglevel=error "$tarball"

install -m 0755 "$(command -v node)" "$prefix/node"
cat > "$prefix/bin/code-server" <<'SCRIPT'
#!/bin/sh
exec /opt/code-server/node /opt/code-server/node_modules/code-server/out/node/entry.js "$@"
SCRIPT
chmod 0755 "$prefix/bin/code-server"
"$prefix/bin/code-server" --version
cd /
rm -rf "$work" /root/.npm /root/.cache "$prefix/package.json" "$prefix/package-lock.json"
