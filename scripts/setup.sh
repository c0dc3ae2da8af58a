#!/usr/bin/env bash
# Sets up everything granary-flows needs on a fresh Debian machine, as root, and is cheap to re-run:
# a Docker engine (installed and started if none answers), the example images (built locally, since no registry
# is reachable, and cached), a sample GeoTIFF, and the package in ./.venv (the versions of constraints.txt).
# `--test` adds what the tests, the linters and the docs need; `--newest` then puts the newest tested set
# (constraints-newest.txt) in ./.venv-newest.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${GRANARY_CACHE:-$HOME/.cache/granary-flows}"
mkdir -p "$CACHE"
log() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }

apt_install() {
  if [ ! -f "$CACHE/apt-updated" ]; then apt-get update -q >/dev/null && touch "$CACHE/apt-updated"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

start_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  command -v dockerd >/dev/null || { log "installing the Docker engine"; apt_install docker.io; }
  log "starting dockerd (overlay2)"
  mkdir -p /var/lib/docker
  nohup dockerd --storage-driver=overlay2 >/var/log/granary-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return; sleep 0.5; done
  echo "dockerd did not start; see /var/log/granary-dockerd.log" >&2; exit 1
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# An image is rebuilt when its recipe changed: the recipe's hash is kept in a label.
recipe_hash() { cat "$@" | sha256sum | cut -c1-16; }
image_hash() { docker image inspect -f '{{index .Config.Labels "granary.recipe"}}' "$1" 2>/dev/null || true; }

build_hello() {
  local hash; hash=$(recipe_hash scripts/setup.sh examples/hello/*.sh tests/images/*.sh)
  [ "$(image_hash granary/hello:1)" = "$hash" ] && return
  log "building granary/hello:1 (busybox)"
  [ -x /bin/busybox ] || apt_install busybox-static
  local root; root=$(mktemp -d)
  mkdir -p "$root"/{bin,tmp,app/tests}
  cp /bin/busybox "$root/bin/busybox"
  for applet in sh echo cat ls mkdir sleep printf env head tail dd seq wc true false kill date grep touch id rm ln mkfifo; do
    ln -s busybox "$root/bin/$applet"
  done
  cp examples/hello/*.sh "$root/app/"
  cp tests/images/*.sh "$root/app/tests/"  # the tests' hostile and leaky containers
  tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c "LABEL granary.recipe=$hash" -c 'CMD ["/bin/sh", "/app/hello.sh"]' - granary/hello:1 >/dev/null
  rm -rf "$root"
}

# Images written for other systems' conventions, unmodified (tests and the README's examples): a GRiD-style
# entrypoint that reads stdin and writes /grid, and process-api's pyecho, which reads its last argument.
build_conventions() {
  local hash; hash=$(recipe_hash scripts/setup.sh examples/grid/grid.sh)
  if [ "$(image_hash granary/grid-echo:1)" != "$hash" ]; then
    log "building granary/grid-echo:1 (busybox, a GRiD-style entrypoint)"
    local root; root=$(mktemp -d)
    mkdir -p "$root"/{bin,tmp,app,grid}
    cp /bin/busybox "$root/bin/busybox"
    for applet in sh cat echo printf wc; do ln -s busybox "$root/bin/$applet"; done
    cp examples/grid/grid.sh "$root/app/grid.sh"
    tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c "LABEL granary.recipe=$hash" \
      -c 'ENTRYPOINT ["/bin/sh", "/app/grid.sh"]' - granary/grid-echo:1 >/dev/null
    rm -rf "$root"
  fi
  hash=$(recipe_hash scripts/setup.sh examples/pyecho/main.py)
  if [ "$(image_hash pyecho:latest)" != "$hash" ]; then
    log "building pyecho:latest (process-api's echo plugin)"
    local cid links; cid=$(docker create granary/ndvi-base:1 true); links=$(mktemp -d)
    ln -s /usr/bin/python3 "$links/python"
    docker cp examples/pyecho/main.py "$cid:/app/main.py" 2>/dev/null || { docker cp examples/pyecho "$cid:/app"; }
    docker cp "$links/python" "$cid:/usr/local/bin/python"
    docker commit -c 'WORKDIR /app' -c "LABEL granary.recipe=$hash" "$cid" pyecho:latest >/dev/null
    docker rm "$cid" >/dev/null; rm -rf "$links"
  fi
}

# python3-boto3 lets the same image read inputs from and write outputs to S3 when it runs on AWS Batch; python3-pil
# draws the quicklooks (their legends).
BASE_PACKAGES="python3-rasterio,python3-numpy,python3-boto3,python3-pil"

build_ndvi() {
  local base_hash; base_hash=$(echo "$BASE_PACKAGES" | sha256sum | cut -c1-8)
  local base="$CACHE/debian-$base_hash.tar" hash; hash=$(echo "$base_hash" | cat - examples/ndvi/app/* | sha256sum | cut -c1-16)
  if [ "$(image_hash granary/ndvi:1)" != "$hash" ]; then
    if [ ! -f "$base" ]; then
      log "building a Debian root filesystem with rasterio and boto3 (debootstrap, about two minutes)"
      command -v debootstrap >/dev/null || apt_install debootstrap
      local root; root=$(mktemp -d)
      debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root" \
        http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1
      rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
      tar -C "$root" -cf "$base.tmp" . && mv "$base.tmp" "$base"
      rm -rf "$root"
    fi
    if [ "$(image_hash granary/ndvi-base:1)" != "$base_hash" ]; then
      log "importing granary/ndvi-base:1"
      docker import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c "LABEL granary.recipe=$base_hash" "$base" granary/ndvi-base:1 >/dev/null
    fi
    log "building granary/ndvi:1"
    local cid; cid=$(docker create granary/ndvi-base:1 true)
    docker cp examples/ndvi/app "$cid:/app"
    docker commit -c 'CMD ["python3", "/app/ndvi.py"]' -c "LABEL granary.recipe=$hash" "$cid" granary/ndvi:1 >/dev/null
    docker rm "$cid" >/dev/null
  fi
  # The sample scene and its tiles (the ndvi-tiles pipeline's example input), made again when their recipe changes.
  local sample_hash; sample_hash=$(recipe_hash examples/ndvi/app/make_sample.py examples/ndvi/app/make_tiles.py)
  if [ "$(cat "$CACHE/sample/.recipe" 2>/dev/null)" != "$sample_hash" ]; then
    log "writing the sample scene"
    rm -rf "$CACHE/sample" && mkdir -p "$CACHE/sample"
    docker run --rm --network none -v "$CACHE/sample:/out" granary/ndvi:1 python3 /app/make_sample.py /out/scene.tif
    docker run --rm --network none -v "$CACHE/sample:/out" granary/ndvi:1 \
      python3 /app/make_tiles.py /out/scene.tif /out/tiles
    echo "$sample_hash" >"$CACHE/sample/.recipe"
  fi
}

# Every install resolves the versions of a constraints file, which were tested together (bash scripts/lock.sh).
install_package() {  # install_package VENV CONSTRAINTS EXTRAS (a venv with more extras is kept as it is)
  local venv=$1 constraints=$2 extras=$3 stamp="$1/.installed" have
  have=$(cat "$stamp" 2>/dev/null || echo none)
  if [ -z "$extras" ] && [ "$have" != none ]; then extras=$have; fi
  if [ ! -x "$venv/bin/granary" ] || [ "$have" != "$extras" ] \
    || [ pyproject.toml -nt "$stamp" ] || [ "$constraints" -nt "$stamp" ]; then
    log "installing granary-flows$extras into $venv ($constraints)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -c "$constraints" -e ".$extras" >"$CACHE/pip.log" 2>&1 || { cat "$CACHE/pip.log" >&2; exit 1; }
    echo "$extras" >"$stamp"
  fi
}

install_test_tools() {
  command -v chromium >/dev/null || { log "installing Chromium (for the UI test)"; apt_install chromium; }
  command -v npm >/dev/null || { log "installing Node.js"; apt_install nodejs npm; }
  if [ ! -d tests/ui/node_modules/playwright-core ]; then
    log "installing playwright-core (no browser download: it drives Debian's Chromium)"
    (cd tests/ui && npm ci --no-audit --no-fund >"$CACHE/npm.log" 2>&1) || { cat "$CACHE/npm.log" >&2; exit 1; }
  fi
  # The link test runs `granary api` a day and a week ahead of the machine's clock.
  command -v faketime >/dev/null || { log "installing faketime (a later clock for the result-link test)"; apt_install faketime; }
  # The tests start their own PostgreSQL cluster for the session's Prefect server; only the programs are needed.
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { log "installing PostgreSQL (the tests' Prefect server runs on it)"; apt_install postgresql; }
  # The production topology's test: Redis as Prefect's broker and cache, HAProxy in front of the API replicas.
  command -v redis-server >/dev/null && command -v haproxy >/dev/null || { log "installing Redis and HAProxy (the topology test)"; apt_install redis-server haproxy; }
}

build_seed_example() {
  .venv/bin/python examples/seed-random/build.py
}

TEST=false NEWEST=false
for option in "$@"; do
  case "$option" in
    --test) TEST=true ;;
    --newest) NEWEST=true ;;
    *) echo "unknown option $option (--test, --newest)" >&2; exit 2 ;;
  esac
done
start_docker
build_hello
build_ndvi
build_conventions
if $TEST; then install_package .venv constraints.txt "[test,dev,scale]"; else install_package .venv constraints.txt ""; fi
build_seed_example
if $TEST; then install_test_tools; fi
if $NEWEST; then install_package .venv-newest constraints-newest.txt "[test,dev,scale]"; fi
log "ready"
