#!/usr/bin/env bash
# Build and run the lab: prerequisites -> static musl builds -> FROM scratch images -> up -> wait -> URLs.
#
#   ./setup.sh                 build what changed and (re)start the lab on http://localhost:8888
#   ./setup.sh build [SVC...]  only build the binaries and the images (default: all three)
#   ./setup.sh down [--volumes] stop the lab (and drop the roster and logs with --volumes)
#   ./setup.sh scale N         run N student-api replicas
#   ./setup.sh roll [SERVICE]  replace every replica of student-api (or static-site) one at a
#                              time, each new one in rotation before an old one drains: no
#                              request fails and the replica count stays
#   ./setup.sh logs [ARGS...]  compose logs (e.g. ./setup.sh logs -f balancer)
#   ./setup.sh status          containers, health, restart counts and URLs
#   ./setup.sh swarm [status|down]  deploy the lab on the swarm DOCKER_HOST points at (see
#                              deploy/swarm/swarm.sh; LAB_REGISTRY=host:port pushes the images)
#   ./setup.sh cluster up [N]|down|status|cut K|heal K|crash K  an N-node swarm on this
#                              Linux machine (root; see deploy/swarm/cluster.sh)
#
# Environment, else the .env file beside compose.yaml (which compose reads too), else the
# default: COMPOSE_PROJECT_NAME (lab-stack), LAB_HTTP_PORT (8888), LAB_ADMIN_PORT (1936),
# LAB_BALANCER_CONF_DIR (./balancer/conf), LAB_IMAGE_PREFIX (lab-stack), LAB_IMAGE_TAG (latest),
# LAB_WAIT_SECS (how long `up` waits for the lab to answer, 90), BALANCER_ADMIN_TOKEN (unset:
# the balancer's admin actions and the replicas' run-time fault knobs are off), LAB_DELAY,
# LAB_CPU, LAB_ERROR_RATE, LAB_UNHEALTHY (fault knobs of every student-api replica, unset: off).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"

# Which LAB_* and COMPOSE_* variables came from .env, to name the source in error messages.
declare -A FROM_DOTENV=()

# Compose's precedence, so setup.sh and a plain `docker compose ...` in this folder address the
# same project with the same ports: the shell's environment, then .env, then the default.
load_dotenv() {
    local line key value
    [ -f "$ROOT/.env" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
        key=${BASH_REMATCH[2]} value=${BASH_REMATCH[3]}
        if [[ $value =~ ^\"(.*)\"[[:space:]]*$ || $value =~ ^\'(.*)\'[[:space:]]*$ ]]; then
            value=${BASH_REMATCH[1]}
        fi
        [ -n "${!key+set}" ] && continue
        export "$key=$value"
        FROM_DOTENV[$key]=1
    done <"$ROOT/.env"
}
load_dotenv

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-lab-stack}
export LAB_HTTP_PORT=${LAB_HTTP_PORT:-8888}
export LAB_ADMIN_PORT=${LAB_ADMIN_PORT:-1936}
export LAB_IMAGE_PREFIX=${LAB_IMAGE_PREFIX:-lab-stack}
export LAB_IMAGE_TAG=${LAB_IMAGE_TAG:-latest}
export LAB_BALANCER_CONF_DIR=${LAB_BALANCER_CONF_DIR:-./balancer/conf}
export LAB_WAIT_SECS=${LAB_WAIT_SECS:-90}
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

# --- inputs ----------------------------------------------------------------------------------

# Where a variable's value came from, for error messages.
source_of() {
    if [ -n "${FROM_DOTENV[$1]:-}" ]; then
        printf 'from %s/.env' "$ROOT"
    else
        printf 'from the environment'
    fi
}

bad_input() { die "$1=\"${!1}\" ($(source_of "$1")): expected $2."; }

valid_port() { [[ $1 =~ ^[1-9][0-9]{0,4}$ ]] && [ "$1" -le 65535 ]; }

# Every input is checked before anything is built or started, so a typo costs a second, not a
# half-started lab.
validate_inputs() {
    local v name sep='([._]|__|-+)'
    local component="[a-z0-9]+(${sep}[a-z0-9]+)*"
    [[ $COMPOSE_PROJECT_NAME =~ ^[a-z0-9][a-z0-9_-]*$ ]] ||
        bad_input COMPOSE_PROJECT_NAME "lower-case letters, digits, '-' and '_', starting with a letter or digit (compose's rule)"
    for v in LAB_HTTP_PORT LAB_ADMIN_PORT; do
        valid_port "${!v}" || bad_input "$v" "a TCP port number from 1 to 65535"
    done
    [ "$LAB_HTTP_PORT" != "$LAB_ADMIN_PORT" ] ||
        bad_input LAB_ADMIN_PORT "a port other than LAB_HTTP_PORT ($LAB_HTTP_PORT): the balancer publishes both"
    [[ $LAB_WAIT_SECS =~ ^[1-9][0-9]{0,5}$ ]] ||
        bad_input LAB_WAIT_SECS "a whole number of seconds, at least 1 (e.g. 90)"
    # Docker's reference grammar: [registry[:port]/]path, the path in lower case.
    [[ $LAB_IMAGE_PREFIX =~ ^([A-Za-z0-9.-]+(:[0-9]+)?/)?$component(/$component)*$ ]] ||
        bad_input LAB_IMAGE_PREFIX "an image name prefix such as lab-stack or registry.example:5000/team (lower-case letters, digits, '.', '_', '-' and '/')"
    [[ $LAB_IMAGE_TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] ||
        bad_input LAB_IMAGE_TAG "a docker tag: letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-'"
    # Only starting the lab mounts it: `down`, `status` or `logs` must work with it gone.
    if [ "$1" = up ]; then
        [ -d "$LAB_BALANCER_CONF_DIR" ] ||
            bad_input LAB_BALANCER_CONF_DIR "a directory (relative paths start at $ROOT) holding balancer.toml"
        [ -f "$LAB_BALANCER_CONF_DIR/balancer.toml" ] ||
            bad_input LAB_BALANCER_CONF_DIR "a directory holding balancer.toml (the balancer reads /etc/balancer/balancer.toml from this mount); copy balancer/conf/balancer.toml there"
    fi
    for name in $(compgen -e | grep '^LAB_' || true); do
        case $name in
        LAB_HTTP_PORT | LAB_ADMIN_PORT | LAB_WAIT_SECS | LAB_IMAGE_PREFIX | LAB_IMAGE_TAG | LAB_BALANCER_CONF_DIR) ;;
        # deploy/swarm/swarm.sh and cluster.sh check these themselves.
        LAB_REGISTRY | LAB_CLUSTER_PREFIX | LAB_CLUSTER_SUBNET | LAB_CLUSTER_DIR) ;;
        # compose.yaml passes these to student-api, which checks them (a bad one stops it).
        LAB_DELAY | LAB_CPU | LAB_ERROR_RATE | LAB_UNHEALTHY) ;;
        *) say "warning: $name is not a setting of setup.sh or compose.yaml (a typo?); ignored" ;;
        esac
    done
}

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

# On a terminal cargo draws its own progress bar. Piped or logged it prints a line per crate and
# then nothing while the last crates are optimised and linked (fat LTO: a minute or more), so say
# every 10 s that it is still working.
cargo_with_progress() {
    if [ -t 2 ]; then
        cargo "$@"
        return
    fi
    local pid t0=$SECONDS next=$((SECONDS + 10))
    cargo "$@" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$next" ]; then
            say "cargo is still building ($((SECONDS - t0))s so far)"
            next=$((SECONDS + 10))
        fi
        sleep 1
    done
    wait "$pid"
}

build_binaries() {
    say "building static release binaries ($TARGET)"
    local args=(build --release --target "$TARGET")
    local s
    for s in "${BUILD[@]}"; do args+=(-p "$s"); done
    if ! cargo_with_progress "${args[@]}"; then
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
    # Not the balancer's config: compose mounts balancer/conf, so an edit there is a reload, never
    # a rebuild (and without a mount the balancer runs on its built-in defaults).
    case $svc in
    student-api) mkdir "$dir/data" ;;
    balancer) mkdir "$dir/log" ;;
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

# Ids of the project's service containers (not `compose run` one-offs); `-a` adds stopped ones.
ids_of() {
    local all=
    [ "${1:-}" = -a ] && all=-a && shift
    docker ps -q $all --no-trunc --filter "$(project_filter)" --filter label=com.docker.compose.oneoff=False \
        ${1:+--filter "label=com.docker.compose.service=$1"}
}

replicas() { ids_of "$1" | wc -l; }

# The replica counts to keep, as `--scale` arguments. The rule: once the project has containers,
# every app keeps as many as it has, running or not (a killed replica is still wanted: `up`
# restarts it), including 0 after `scale 0`; a fresh project (never started, or after `down`)
# starts with compose's default of one each.
scale_args() {
    local svc
    SCALE=()
    [ -n "$(ids_of -a)" ] || return 0
    for svc in static-site student-api; do
        SCALE+=(--scale "$svc=$(ids_of -a "$svc" | wc -l)")
    done
}

compose_up() {
    local err
    # Counted before anything below removes a container.
    scale_args
    # docker-compose v1 recreates a container by reading the old image's ContainerConfig, which
    # images from BuildKit or engines >= 25 lack: `KeyError: 'ContainerConfig'`. Removing the
    # services whose image changed first means v1 creates instead of recreating.
    if compose_is_v1 && [ "${#CHANGED[@]}" -gt 0 ]; then
        compose rm -sf "${CHANGED[@]}" >/dev/null 2>&1 || true
    fi
    err=$(mktemp)
    if ! compose up -d --remove-orphans "${SCALE[@]}" 2>"$err"; then
        cat "$err" >&2
        if grep -q ContainerConfig "$err"; then
            say "docker-compose v1 hit KeyError 'ContainerConfig'; removing the containers and starting again"
            compose rm -sf >/dev/null 2>&1 || true
            compose up -d --remove-orphans "${SCALE[@]}"
        else
            rm -f "$err"
            die "compose up failed (see above)."
        fi
    else
        cat "$err" >&2
    fi
    rm -f "$err"
}

# Prints the HTTP status code of GET http://HOST:PORT/PATH (HOST defaults to 127.0.0.1; a
# swarm deploy asks the balancer's node), or nothing.
http_status() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$3/$1" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" "$2" >&3
        read -r _ code _ <&3 && printf "%s" "$code"' _ "$1" "$2" "${3:-127.0.0.1}" 2>/dev/null || true
}

# Prints the whole answer (headers and body) to GET http://127.0.0.1:PORT/PATH, or nothing.
# HTTP/1.0, so the body is never chunked and ends when the connection closes.
http_get() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n" "$2" >&3
        cat <&3' _ "$1" "$2" 2>/dev/null || true
}

# One line per service container: id, service, state, restart count, last exit code.
container_states() {
    local ids
    ids=$(ids_of -a)
    [ -n "$ids" ] || return 0
    # shellcheck disable=SC2086
    docker inspect -f '{{.Id}} {{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}' $ids 2>/dev/null || true
}

# The file to fix when a service will not stay up.
fix_hint() {
    case $1 in
    balancer)
        printf 'the balancer exits on an invalid configuration: fix %s/balancer.toml (LAB_BALANCER_CONF_DIR) or its BALANCER_* settings in compose.yaml / .env, then run ./setup.sh again' \
            "${LAB_BALANCER_CONF_DIR%/}"
        ;;
    *) printf 'fix its settings in compose.yaml (environment:) or .env, then run ./setup.sh again' ;;
    esac
}

# Stops at once, with the service's last log lines and what to fix, when a container crashed:
# it exited, or the engine is restarting it (RestartCount grew since `up`), so waiting longer
# would only wait for the timeout.
fail_if_crashed() {
    local -n before=$1
    local id svc state restarts code
    while read -r id svc state restarts code; do
        [ -n "$id" ] || continue
        case $state in
        exited | dead | restarting) ;;
        *) [ "$restarts" -gt "${before[$id]:-0}" ] || continue ;;
        esac
        printf '\n' >&2
        [ "$state" = running ] && code="(it is running again, until its next exit)"
        say "$svc container ${id:0:12} is not staying up: state $state, restarted $restarts time(s), exit code $code. Its last log lines:"
        docker logs --tail 20 "$id" 2>&1 | sed 's/^/    /' >&2
        die "$svc keeps failing; $(fix_hint "$svc")."
    done < <(container_states)
}

# restarts_at_start is read through a nameref by fail_if_crashed.
# shellcheck disable=SC2034
wait_ready() {
    local deadline=$((SECONDS + LAB_WAIT_SECS)) ok id svc state restarts code
    local -A restarts_at_start=()
    while read -r id svc state restarts code; do
        [ -n "$id" ] && restarts_at_start[$id]=$restarts
    done < <(container_states)
    # Only what has replicas can answer 200 (after `scale 0` the API answers 503 by design);
    # with none at all, the balancer's own health endpoint.
    local urls=()
    [ "$(replicas static-site)" -gt 0 ] && urls+=("$LAB_HTTP_PORT /")
    [ "$(replicas student-api)" -gt 0 ] && urls+=("$LAB_HTTP_PORT /api/student")
    [ "${#urls[@]}" -gt 0 ] || urls=("$LAB_ADMIN_PORT /healthz")
    local what='' url
    for url in "${urls[@]}"; do what+="http://localhost:${url% *}${url#* } "; done
    say "waiting for $what(up to ${LAB_WAIT_SECS}s)"
    while :; do
        fail_if_crashed restarts_at_start
        ok=1
        for url in "${urls[@]}"; do
            [ "$(http_status "${url% *}" "${url#* }")" = 200 ] || ok=
        done
        [ -n "$ok" ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            compose ps >&2 || true
            die "the lab did not answer 200 on $what within ${LAB_WAIT_SECS}s. See: ./setup.sh logs"
        fi
        sleep 1
    done
}

print_urls() {
    cat <<URLS

lab-stack is running (project $COMPOSE_PROJECT_NAME).
  Lab page:        http://localhost:$LAB_HTTP_PORT/
  Student API:     http://localhost:$LAB_HTTP_PORT/api/student
  Balancer stats:  http://localhost:$LAB_ADMIN_PORT/   (this machine only)

Try:
  curl -si http://localhost:$LAB_HTTP_PORT/api/student | grep -i -e x-instance -e x-upstream
  curl -s -X POST -H 'content-type: application/json' \\
       -d '{"firstName":"Ada","lastName":"Lovelace","gender":"female","birthday":"1990-12-10","email":"ada@example.org","city":"London"}' \\
       http://localhost:$LAB_HTTP_PORT/api/student
  docker compose up -d --scale student-api=3   # (or docker-compose) three API replicas; watch X-Instance change
  ./setup.sh roll           # replace every API replica, one at a time, without a failed request
  ./setup.sh status         # containers, health and restarts
  ./setup.sh logs -f        # follow the logs
  ./setup.sh down           # stop (add --volumes to drop the roster)
URLS
}

# --- rolling replacement ---------------------------------------------------------------------

# The port the balancer reaches a service's replicas on (compose.yaml's *_LISTEN).
member_port() {
    case $1 in
    student-api) printf 3000 ;;
    static-site) printf 8080 ;;
    esac
}

# Whether the balancer's /api/status lists ADDR as a member in rotation. Prints nothing and
# fails when the admin port does not answer at all.
in_rotation() {
    local addr=$1 status
    status=$(http_get "$LAB_ADMIN_PORT" /api/status)
    [ -n "$status" ] || return 2
    # A member's flat fields come before its nested objects (latency, last_check).
    grep -o "\"addr\":\"$addr\"[^{}]*" <<<"$status" | grep -q '"in_rotation":true'
}

# Waits until a new replica passes its health check and the balancer sends it requests.
wait_replica_serving() {
    local svc=$1 id=$2 deadline=$((SECONDS + LAB_WAIT_SECS)) health ip addr rc
    while :; do
        health=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null || true)
        case $health in
        running/healthy) break ;;
        running/* | created/*) ;;
        *)
            docker logs --tail 20 "$id" 2>&1 | sed 's/^/    /' >&2
            die "the new $svc replica ${id:0:12} did not start ($health); the old replicas keep serving. $(fix_hint "$svc")."
            ;;
        esac
        [ "$SECONDS" -lt "$deadline" ] ||
            die "the new $svc replica ${id:0:12} was not healthy within ${LAB_WAIT_SECS}s ($health); the old replicas keep serving."
        sleep 0.5
    done
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$id" | awk '{print $1}')
    addr="$ip:$(member_port "$svc")"
    while :; do
        rc=0
        in_rotation "$addr" || rc=$?
        case $rc in
        0) return 0 ;;
        2)
            say "the balancer's admin port $LAB_ADMIN_PORT does not answer; going on with $addr healthy"
            return 0
            ;;
        esac
        [ "$SECONDS" -lt "$deadline" ] ||
            die "the balancer did not put $addr ($svc ${id:0:12}) in rotation within ${LAB_WAIT_SECS}s; the old replicas keep serving."
        sleep 0.5
    done
}

cmd_roll() {
    local svc=${1:-student-api} old n id before new
    case $svc in
    student-api | static-site) ;;
    balancer) die "the balancer cannot be replaced without a gap: it alone holds ports $LAB_HTTP_PORT and $LAB_ADMIN_PORT (./setup.sh recreates it when its image changed)." ;;
    *) die "usage: ./setup.sh roll [student-api|static-site]" ;;
    esac
    detect_compose
    mapfile -t old < <(ids_of -a "$svc")
    n=${#old[@]}
    if [ "$n" -eq 0 ]; then
        say "$svc has no replica to replace (./setup.sh scale N, or ./setup.sh to start the lab)"
        return 0
    fi
    say "replacing $n $svc replica(s) one at a time (a new one serves before an old one drains)"
    for id in "${old[@]}"; do
        before=$(ids_of -a "$svc")
        # One more than there are; --no-recreate leaves the old ones alone even when their image
        # or settings changed (that is what the new one is for).
        compose up -d --no-deps --no-recreate --scale "$svc=$((n + 1))" "$svc"
        new=$(ids_of -a "$svc" | grep -vxF "$before" | head -n1 || true)
        [ -n "$new" ] || die "compose started no new $svc container."
        wait_replica_serving "$svc" "$new"
        # SIGTERM: the replica reports draining, the balancer takes it out, it finishes its
        # in-flight requests and exits (compose's own `stop` does the same).
        docker stop -t 30 "$id" >/dev/null
        docker rm "$id" >/dev/null
        say "replaced ${id:0:12} by ${new:0:12}"
    done
    say "$svc: $(replicas "$svc") replica(s), all new"
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
    local volumes='' containers networks left
    case "${1:-}" in
    "") ;;
    --volumes | -v) volumes=1 ;;
    *) die "usage: ./setup.sh down [--volumes]" ;;
    esac
    detect_compose
    containers=$(docker ps -aq --filter "$(project_filter)")
    networks=$(docker network ls -q --filter "$(project_filter)")
    if [ -n "$containers$networks" ]; then
        compose down --remove-orphans ${volumes:+--volumes}
        return
    fi
    # Nothing runs; compose would still try the network and print "Network ... not found".
    left=
    if [ -n "$volumes" ]; then
        left=$(docker volume ls -q --filter "$(project_filter)")
    fi
    if [ -n "$left" ]; then
        # shellcheck disable=SC2086
        docker volume rm $left | sed 's/^/Removed volume /'
    else
        say "nothing to remove: project '$COMPOSE_PROJECT_NAME' has no containers${volumes:+, volumes} or networks"
    fi
}

cmd_scale() {
    local n=${1:-}
    [[ "$n" =~ ^[0-9]+$ ]] || die "usage: ./setup.sh scale N   (N student-api replicas)"
    detect_compose
    compose up -d --no-recreate --scale "student-api=$n" student-api
    say "student-api now has $(replicas student-api) running replica(s)"
}

# Restart counts beside compose's table: a crash-looping container shows as "Up (health:
# starting)" there between two restarts.
print_restarts() {
    local id svc state restarts code name any=
    while read -r id svc state restarts code; do
        [ -n "$id" ] || continue
        name=$(docker inspect -f '{{.Name}}' "$id" 2>/dev/null || true)
        if [ -z "$any" ]; then
            printf '\n%-40s %-11s %-9s %s\n' CONTAINER STATE RESTARTS "LAST EXIT"
            any=1
        fi
        printf '%-40s %-11s %-9s %s\n' "${name#/}" "$state" "$restarts" "$code"
        if [ "$restarts" -gt 0 ] || [ "$state" = restarting ]; then
            printf '  ^ %s has restarted: see ./setup.sh logs %s; %s\n' "$svc" "$svc" "$(fix_hint "$svc")"
        fi
    done < <(container_states | sort -k2,2 -k1,1)
}

cmd_status() {
    local balancer
    detect_compose
    compose ps
    print_restarts
    balancer=$(ids_of balancer | head -n1)
    if [ -n "$balancer" ]; then
        printf '\nPublished by the balancer:\n'
        docker port "$balancer"
    else
        printf '\nThe balancer is not running: ./setup.sh\n'
    fi
}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

main() {
    local cmd=${1:-up}
    [ $# -gt 0 ] && shift
    case $cmd in
    -h | --help | help)
        usage
        return
        ;;
    esac
    validate_inputs "$cmd"
    case $cmd in
    up) cmd_up ;;
    build) cmd_build "$@" ;;
    down) cmd_down "$@" ;;
    scale) cmd_scale "$@" ;;
    roll) cmd_roll "$@" ;;
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
    *) die "unknown command '$cmd' (try ./setup.sh help)" ;;
    esac
}

main "$@"
