#!/usr/bin/env bash
# Build and run the lab: prerequisites -> static musl builds -> FROM scratch images -> up -> wait -> URLs.
#
#   ./setup.sh                 build what changed and (re)start the lab on http://localhost:8888
#   ./setup.sh build [SVC...]  only build the binaries and the images (default: all three)
#   ./setup.sh down [--volumes] stop the lab (and drop the roster and logs with --volumes)
#   ./setup.sh scale N         run N student-api replicas
#   ./setup.sh logs [ARGS...]  compose logs (e.g. ./setup.sh logs -f balancer)
#   ./setup.sh status          containers, health and URLs
#   ./setup.sh swarm [status|down]  deploy the lab on the swarm DOCKER_HOST points at (see
#                              deploy/swarm/swarm.sh; LAB_REGISTRY=host:port pushes the images)
#   ./setup.sh cluster up [N]|down|status  an N-node swarm on this Linux machine (root; see
#                              deploy/swarm/cluster.sh)
#
# Environment: COMPOSE_PROJECT_NAME (default lab-stack), LAB_HTTP_PORT (8888), LAB_ADMIN_PORT
# (1936), LAB_BALANCER_CONF_DIR, LAB_IMAGE_PREFIX, LAB_IMAGE_TAG (see compose.yaml),
# LAB_WAIT_SECS (how long `up` waits for the lab to answer, default 90).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-lab-stack}
export LAB_HTTP_PORT=${LAB_HTTP_PORT:-8888}
export LAB_ADMIN_PORT=${LAB_ADMIN_PORT:-1936}
export LAB_IMAGE_PREFIX=${LAB_IMAGE_PREFIX:-lab-stack}
export LAB_IMAGE_TAG=${LAB_IMAGE_TAG:-latest}
WAIT_SECS=${LAB_WAIT_SECS:-90}
TARGET=x86_64-unknown-linux-musl
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVICES=(balancer static-site student-api)
# The services to build (`./setup.sh build SVC...` narrows it), and those whose image this run
# (re)built.
BUILD=("${SERVICES[@]}")
CHANGED=()

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'setup.sh: error: %s\n' "$*" >&2
    exit 1
}

image_of() { printf '%s/%s:%s' "$LAB_IMAGE_PREFIX" "$1" "$LAB_IMAGE_TAG"; }

# --- prerequisites ---------------------------------------------------------------------------

COMPOSE=()
detect_compose() {
    command -v docker >/dev/null 2>&1 ||
        die "docker is not installed. Install Docker Engine (https://docs.docker.com/engine/install/)."
    docker info >/dev/null 2>&1 ||
        die "the Docker engine is not reachable (is the daemon running, and may this user use it? try: docker info)."
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    else
        die "neither 'docker compose' (v2 plugin) nor 'docker-compose' (v1) is installed."
    fi
}

compose() { "${COMPOSE[@]}" --project-directory "$ROOT" -f "$ROOT/compose.yaml" -p "$COMPOSE_PROJECT_NAME" "$@"; }
compose_is_v1() { [ "${COMPOSE[0]}" = docker-compose ]; }

check_rust() {
    command -v cargo >/dev/null 2>&1 ||
        die "cargo is not installed. Install Rust with rustup (https://rustup.rs)."
    if [ ! -d "$(rustc --print target-libdir --target "$TARGET" 2>/dev/null)" ]; then
        command -v rustup >/dev/null 2>&1 ||
            die "the Rust target $TARGET is missing and rustup is not there to add it."
        say "adding the Rust target $TARGET"
        rustup target add "$TARGET"
    fi
}

# --- build -----------------------------------------------------------------------------------

build_binaries() {
    say "building static release binaries ($TARGET)"
    local args=(build --release --target "$TARGET")
    local s
    for s in "${BUILD[@]}"; do args+=(-p "$s"); done
    if ! cargo "${args[@]}"; then
        command -v musl-gcc >/dev/null 2>&1 ||
            say "hint: musl-gcc is missing; crates that compile C need it (Debian/Ubuntu: apt-get install musl-tools)"
        die "cargo build failed (see above)."
    fi
}

# The staging directory is the whole docker build context: the binary plus the empty directories
# the image needs, so `docker build` sends a few MB instead of target/.
stage() {
    local svc=$1 dir="$TARGET_DIR/docker/$1"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$TARGET_DIR/$TARGET/release/$svc" "$dir/$svc"
    case $svc in
    student-api) mkdir "$dir/data" ;;
    balancer)
        mkdir "$dir/log" "$dir/conf"
        cp "$ROOT/balancer/conf/balancer.toml" "$dir/conf/"
        ;;
    esac
    printf '%s' "$dir"
}

# A hash of everything that goes into an image; stored as a label so an unchanged image is kept.
context_hash() {
    local svc=$1 dir=$2
    {
        (cd "$dir" && find . -print | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
        sha256sum <"$ROOT/$svc/Dockerfile"
    } | sha256sum | cut -d' ' -f1
}

build_images() {
    local version svc dir hash have log
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
    CHANGED=()
    for svc in "${BUILD[@]}"; do
        dir=$(stage "$svc")
        hash=$(context_hash "$svc" "$dir")
        have=$(docker image inspect -f '{{ index .Config.Labels "lab-stack.build-hash" }}' "$(image_of "$svc")" 2>/dev/null || true)
        if [ "$have" = "$hash" ]; then
            say "image $(image_of "$svc") is up to date"
            continue
        fi
        say "building image $(image_of "$svc")"
        # Quiet unless it fails: the legacy builder prints a deprecation notice on every build.
        if ! log=$(docker build -q -f "$ROOT/$svc/Dockerfile" \
            --build-arg "VERSION=$version" \
            --label "lab-stack.build-hash=$hash" \
            -t "$(image_of "$svc")" "$dir" 2>&1); then
            printf '%s\n' "$log" >&2
            die "docker build of $(image_of "$svc") failed (see above)."
        fi
        CHANGED+=("$svc")
    done
}

# --- run -------------------------------------------------------------------------------------

project_filter() { printf 'label=com.docker.compose.project=%s' "$COMPOSE_PROJECT_NAME"; }

# Fails with a clear message when a port we publish is held by anything but this project.
check_port() {
    local port=$1 what=$2 ours others
    ours=$(docker ps -q --filter "$(project_filter)" --filter "publish=$port")
    [ -n "$ours" ] && return 0
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        others=$(docker ps --filter "publish=$port" --format '{{.Names}}' | paste -sd, -)
        die "port $port ($what) is already in use by ${others:+container(s) $others, }something other than the '$COMPOSE_PROJECT_NAME' stack. Stop it, or choose another port: LAB_HTTP_PORT=... LAB_ADMIN_PORT=... ./setup.sh"
    fi
}

replicas() { docker ps -q --filter "$(project_filter)" --filter "label=com.docker.compose.service=$1" | wc -l; }

compose_up() {
    local scale=() n err
    n=$(replicas student-api)
    # Keep the replica count chosen with `./setup.sh scale N` across re-runs.
    [ "$n" -gt 1 ] && scale=(--scale "student-api=$n")
    # docker-compose v1 recreates a container by reading the old image's ContainerConfig, which
    # images from BuildKit or engines >= 25 lack: `KeyError: 'ContainerConfig'`. Removing the
    # services whose image changed first means v1 creates instead of recreating.
    if compose_is_v1 && [ "${#CHANGED[@]}" -gt 0 ]; then
        compose rm -sf "${CHANGED[@]}" >/dev/null 2>&1 || true
    fi
    err=$(mktemp)
    if ! compose up -d --remove-orphans "${scale[@]}" 2>"$err"; then
        cat "$err" >&2
        if grep -q ContainerConfig "$err"; then
            say "docker-compose v1 hit KeyError 'ContainerConfig'; removing the containers and starting again"
            compose rm -sf >/dev/null 2>&1 || true
            compose up -d --remove-orphans "${scale[@]}"
        else
            rm -f "$err"
            die "compose up failed (see above)."
        fi
    else
        cat "$err" >&2
    fi
    rm -f "$err"
}

# Prints the HTTP status code of GET http://127.0.0.1:PORT/PATH, or nothing.
http_status() {
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" "$2" >&3
        read -r _ code _ <&3 && printf "%s" "$code"' _ "$1" "$2" 2>/dev/null || true
}

wait_ready() {
    local deadline=$((SECONDS + WAIT_SECS)) path ok
    say "waiting for http://localhost:$LAB_HTTP_PORT/ and /api/student (up to ${WAIT_SECS}s)"
    while :; do
        ok=1
        for path in / /api/student; do
            [ "$(http_status "$LAB_HTTP_PORT" "$path")" = 200 ] || ok=
        done
        [ -n "$ok" ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            compose ps >&2 || true
            die "the lab did not answer 200 on http://localhost:$LAB_HTTP_PORT/ and /api/student within ${WAIT_SECS}s. See: ./setup.sh logs"
        fi
        sleep 1
    done
}

print_urls() {
    cat <<EOF

lab-stack is running (project $COMPOSE_PROJECT_NAME).
  Lab page:        http://localhost:$LAB_HTTP_PORT/
  Student API:     http://localhost:$LAB_HTTP_PORT/api/student
  Balancer stats:  http://localhost:$LAB_ADMIN_PORT/   (this machine only)

Try:
  curl -si http://localhost:$LAB_HTTP_PORT/api/student | grep -i -e x-instance -e x-upstream
  curl -s -X POST -H 'content-type: application/json' \\
       -d '{"firstName":"Ada","lastName":"Lovelace","gender":"female","birthday":"1990-12-10","email":"ada@example.org","city":"London"}' \\
       http://localhost:$LAB_HTTP_PORT/api/student
  ./setup.sh scale 3        # three API replicas; watch X-Instance change
  ./setup.sh status         # containers and health
  ./setup.sh logs -f        # follow the logs
  ./setup.sh down           # stop (add --volumes to drop the roster)
EOF
}

# --- commands --------------------------------------------------------------------------------

cmd_build() {
    local svc
    if [ $# -gt 0 ]; then
        for svc in "$@"; do
            [[ " ${SERVICES[*]} " == *" $svc "* ]] || die "unknown service '$svc' (one of: ${SERVICES[*]})"
        done
        BUILD=("$@")
    fi
    detect_compose
    check_rust
    build_binaries
    build_images
}

cmd_up() {
    local t0=$SECONDS
    detect_compose
    check_rust
    # Before the build, so a taken port is reported in a second, not after minutes of compiling.
    check_port "$LAB_HTTP_PORT" "HTTP"
    check_port "$LAB_ADMIN_PORT" "balancer admin"
    build_binaries
    build_images
    say "starting the lab"
    compose_up
    wait_ready
    say "ready in $((SECONDS - t0))s"
    print_urls
}

cmd_down() {
    detect_compose
    case "${1:-}" in
    "") compose down --remove-orphans ;;
    --volumes | -v) compose down --remove-orphans --volumes ;;
    *) die "usage: ./setup.sh down [--volumes]" ;;
    esac
}

cmd_scale() {
    local n=${1:-}
    [[ "$n" =~ ^[0-9]+$ ]] || die "usage: ./setup.sh scale N   (N student-api replicas)"
    detect_compose
    compose up -d --no-recreate --scale "student-api=$n" student-api
    say "student-api now has $(replicas student-api) running replica(s)"
}

cmd_status() {
    local balancer
    detect_compose
    compose ps
    balancer=$(docker ps -q --filter "$(project_filter)" --filter label=com.docker.compose.service=balancer | head -n1)
    if [ -n "$balancer" ]; then
        printf '\nPublished by the balancer:\n'
        docker port "$balancer"
    else
        printf '\nThe balancer is not running: ./setup.sh\n'
    fi
}

main() {
    local cmd=${1:-up}
    [ $# -gt 0 ] && shift
    case $cmd in
    up) cmd_up ;;
    build) cmd_build "$@" ;;
    down) cmd_down "$@" ;;
    scale) cmd_scale "$@" ;;
    logs)
        detect_compose
        compose logs --tail=200 "$@"
        ;;
    status | ps) cmd_status ;;
    swarm)
        # shellcheck source=deploy/swarm/swarm.sh
        . "$ROOT/deploy/swarm/swarm.sh"
        cmd_swarm "$@"
        ;;
    cluster) exec "$ROOT/deploy/swarm/cluster.sh" "$@" ;;
    -h | --help | help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$cmd' (try ./setup.sh help)" ;;
    esac
}

main "$@"
