# shellcheck shell=bash
# `./setup.sh swarm ...`: deploy the lab as the stack `lab-stack` on the swarm the Docker CLI
# points at (DOCKER_HOST or the current context). Sourced by setup.sh, whose helpers it uses
# (say, die, check_rust, build_binaries, build_images, image_of, http_status).
#
#   ./setup.sh swarm           build, (push,) deploy, wait until the lab answers, print where
#   ./setup.sh swarm status    the stack's services and tasks
#   ./setup.sh swarm down      remove the stack
#
# With LAB_REGISTRY=host:port the images are tagged <LAB_REGISTRY>/lab-stack/<service>:<content
# hash> and pushed, so every node can pull them; without it the engine's local images are used,
# which only a one-node swarm can run.

STACK=lab-stack
STACK_FILE=$ROOT/deploy/swarm/stack.yaml

swarm_require_manager() {
    command -v docker >/dev/null 2>&1 || die "docker is not installed."
    local state
    state=$(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}' 2>/dev/null) ||
        die "the Docker engine${DOCKER_HOST:+ at DOCKER_HOST=$DOCKER_HOST} is not reachable (try: docker info)."
    case $state in
    "active true") ;;
    active*) die "this engine is a swarm worker, not a manager: point DOCKER_HOST (or the docker context) at a manager node." ;;
    *) die "this engine is not part of a swarm (state: ${state%% *}). Make one with 'docker swarm init', or a three-node one on this machine with './setup.sh cluster up' (then follow what it prints)." ;;
    esac
}

swarm_validate_inputs() {
    if [ -n "${LAB_REGISTRY:-}" ]; then
        [[ "$LAB_REGISTRY" =~ ^[A-Za-z0-9.-]+(:[0-9]{1,5})?$ ]] ||
            die "LAB_REGISTRY='$LAB_REGISTRY' is not a registry address; expected host[:port], e.g. 10.77.0.1:5000"
    fi
    if [ -n "${STUDENT_DATABASE_URL:-}" ]; then
        [[ "$STUDENT_DATABASE_URL" =~ ^postgres(ql)?:// ]] ||
            die "STUDENT_DATABASE_URL must be a postgres://user:password@host:port/database URL, got '${STUDENT_DATABASE_URL%%://*}://...'"
    fi
}

# The reference a service's image is deployed as: pushed to LAB_REGISTRY under its content hash,
# or the local image retagged with that hash (so a changed image is a changed reference and
# `stack deploy` rolls the service onto it).
swarm_image_ref() {
    local svc=$1 local_ref hash ref
    local_ref=$(image_of "$svc")
    hash=$(docker image inspect -f '{{ index .Config.Labels "lab-stack.build-hash" }}' "$local_ref") ||
        die "image $local_ref is missing after the build"
    hash=${hash:0:12}
    if [ -n "${LAB_REGISTRY:-}" ]; then
        ref="$LAB_REGISTRY/lab-stack/$svc:$hash"
    else
        ref="lab-stack/$svc:$hash"
    fi
    docker tag "$local_ref" "$ref"
    if [ -n "${LAB_REGISTRY:-}" ]; then
        say "pushing $ref"
        local log
        if ! log=$(docker push "$ref" 2>&1); then
            printf '%s\n' "$log" >&2
            die "pushing $ref to LAB_REGISTRY=$LAB_REGISTRY failed (see above). Is the registry running, and does this engine trust it (--insecure-registry $LAB_REGISTRY for a plain-HTTP one)?"
        fi
    fi
    printf '%s' "$ref"
}

# The replica count a deployed service has now, or 2 for a new one.
swarm_replicas() {
    local n
    n=$(docker service inspect -f '{{.Spec.Mode.Replicated.Replicas}}' "${STACK}_$1" 2>/dev/null || true)
    [[ "$n" =~ ^[0-9]+$ ]] || n=2
    printf '%s' "$n"
}

swarm_nodes() { docker node ls -q | wc -l; }

# Address of the node that runs the balancer's task (empty until it runs).
swarm_balancer_addr() {
    local node
    node=$(docker service ps "${STACK}_balancer" --filter desired-state=running \
        --format '{{.Node}} {{.CurrentState}}' 2>/dev/null | awk '$2 == "Running" {print $1; exit}')
    [ -n "$node" ] || return 0
    docker node inspect -f '{{.Status.Addr}}' "$node" 2>/dev/null || true
}

# Every task id the stack's services have now: a re-deploy judges only the tasks it started.
swarm_task_ids() {
    local svc
    for svc in "${SERVICES[@]}"; do
        docker service ps -q "${STACK}_$svc" 2>/dev/null || true
    done
}

# Services with a task that failed or was rejected since the deploy began (not one of
# BEFORE_TASKS), or whose update swarm paused or rolled back.
swarm_failed_services() {
    local svc state
    for svc in "${SERVICES[@]}"; do
        docker service ps --no-trunc --format '{{.ID}}|{{.CurrentState}}|{{.Error}}' "${STACK}_$svc" 2>/dev/null |
            awk -F'|' -v svc="$svc" -v before="$BEFORE_TASKS" '
                BEGIN { n = split(before, ids, " "); for (i = 1; i <= n; i++) old[ids[i]] = 1 }
                !($1 in old) && $3 != "" && $2 ~ /^(Rejected|Failed)/ { print svc; exit }' || true
        state=$(swarm_update_state "$svc")
        case $state in paused | rollback_*) printf '%s\n' "$svc" ;; esac
    done | sort -u
}

# The state of the update this deploy started on a service (`updating`, `completed`,
# `rollback_started`, `paused`, ...), or nothing when it started none (a new service, or an
# unchanged one whose last update, maybe rolled back, is older than this deploy).
swarm_update_state() {
    local line
    line=$(docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.StartedAt}} {{.UpdateStatus.State}}{{end}}' "${STACK}_$1" 2>/dev/null || true)
    [ -n "$line" ] && [ "${line% *}" != "${BEFORE_UPDATES[$1]:-}" ] && printf '%s' "${line##* }"
    return 0
}

# When each service's last update started, before this deploy.
declare -A BEFORE_UPDATES=()
swarm_record_updates() {
    local svc
    for svc in "${SERVICES[@]}"; do
        BEFORE_UPDATES[$svc]=$(docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.StartedAt}}{{end}}' "${STACK}_$svc" 2>/dev/null || true)
    done
}

# Whether every service has finished its update (`stack deploy` returns before it has, and
# until then the old tasks answer).
swarm_updated() {
    local svc
    for svc in "${SERVICES[@]}"; do
        case $(swarm_update_state "$svc") in updating) return 1 ;; esac
    done
}

swarm_wait_ready() {
    local port=${LAB_HTTP_PORT:-8888} deadline=$((SECONDS + LAB_WAIT_SECS)) addr ok path failed svc
    local paths=()
    # A service scaled to 0 stays at 0 across a re-deploy: do not wait for it to answer.
    [ "$LAB_STATIC_REPLICAS" -gt 0 ] && paths+=(/)
    [ "$LAB_API_REPLICAS" -gt 0 ] && paths+=(/api/student)
    say "waiting for the lab to answer on the balancer's node (up to ${LAB_WAIT_SECS}s)"
    while :; do
        addr=$(swarm_balancer_addr)
        if [ -n "$addr" ] && swarm_updated; then
            ok=1
            for path in "${paths[@]}"; do
                [ "$(http_status "$port" "$path" "$addr")" = 200 ] || ok=
            done
            # With both apps at 0 replicas, the balancer itself answering is what there is.
            [ "${#paths[@]}" -gt 0 ] || [ -n "$(http_status "$port" / "$addr")" ] || ok=
            if [ -n "$ok" ]; then
                SWARM_ADDR=$addr
                return 0
            fi
        fi
        failed=$(swarm_failed_services)
        if [ -n "$failed" ] || [ "$SECONDS" -ge "$deadline" ]; then
            for svc in ${failed:-${SERVICES[*]}}; do
                printf '\n--- docker service ps --no-trunc %s_%s\n' "$STACK" "$svc" >&2
                docker service ps --no-trunc "${STACK}_$svc" >&2 || true
            done
            [ -n "$failed" ] && die "$(echo "$failed" | paste -sd, -) failed to deploy (task errors above; swarm rolls a failed update back). Fix the cause and run ./setup.sh swarm again."
            die "the lab did not answer 200 on ${paths[*]:-/}${addr:+ at $addr:$port} within ${LAB_WAIT_SECS}s (task states above)."
        fi
        sleep 1
    done
}

swarm_up() {
    local t0=$SECONDS conf hash nodes
    swarm_validate_inputs
    swarm_require_manager
    nodes=$(swarm_nodes)
    if [ -z "${LAB_REGISTRY:-}" ] && [ "$nodes" -gt 1 ]; then
        die "this swarm has $nodes nodes, and the other nodes cannot see this engine's images. Push them through a registry: LAB_REGISTRY=host:port ./setup.sh swarm (./setup.sh cluster up prints one)."
    fi
    # Absolute: `stack deploy` resolves a relative path from the stack file's directory.
    conf=$(cd "${LAB_BALANCER_CONF_DIR:-$ROOT/balancer/conf}" && pwd)/balancer.toml
    [ -f "$conf" ] || die "the balancer's config $conf does not exist (LAB_BALANCER_CONF_DIR)."
    check_rust
    build_binaries
    build_images
    hash=$(sha256sum "$conf" | cut -c1-12)
    LAB_SWARM_IMAGE_BALANCER=$(swarm_image_ref balancer)
    LAB_SWARM_IMAGE_STATIC_SITE=$(swarm_image_ref static-site)
    LAB_SWARM_IMAGE_STUDENT_API=$(swarm_image_ref student-api)
    export LAB_SWARM_IMAGE_BALANCER LAB_SWARM_IMAGE_STATIC_SITE LAB_SWARM_IMAGE_STUDENT_API
    export LAB_BALANCER_CONF_FILE=$conf LAB_BALANCER_CONF_HASH=$hash
    # Keep the replica counts the operator chose with `docker service scale` across re-deploys.
    LAB_API_REPLICAS=$(swarm_replicas student-api)
    LAB_STATIC_REPLICAS=$(swarm_replicas static-site)
    export LAB_API_REPLICAS LAB_STATIC_REPLICAS
    # The page links to the dashboard; the balancer runs on a manager, this one in a swarm with one.
    LAB_DASHBOARD_URL=http://$(docker info --format '{{.Swarm.NodeAddr}}'):${LAB_ADMIN_PORT:-1936}/
    export LAB_DASHBOARD_URL
    BEFORE_TASKS=$(swarm_task_ids | paste -sd' ' -)
    swarm_record_updates
    say "deploying stack $STACK"
    local resolve=never
    [ -n "${LAB_REGISTRY:-}" ] && resolve=always
    docker stack deploy --prune --resolve-image "$resolve" -c "$STACK_FILE" "$STACK" >&2 ||
        die "docker stack deploy failed (see above)."
    swarm_wait_ready
    say "ready in $((SECONDS - t0))s"
    cat <<EOF

lab-stack is running on the swarm (stack $STACK).
  Lab page:        http://$SWARM_ADDR:${LAB_HTTP_PORT:-8888}/
  Student API:     http://$SWARM_ADDR:${LAB_HTTP_PORT:-8888}/api/student
  Balancer stats:  http://$SWARM_ADDR:${LAB_ADMIN_PORT:-1936}/

Try:
  docker stack ps $STACK                           # which task runs on which node
  docker service scale ${STACK}_student-api=6      # the balancer finds the new tasks by DNS
  ./setup.sh swarm down                            # remove the stack
EOF
}

swarm_down() {
    swarm_require_manager
    if ! docker stack ls --format '{{.Name}}' | grep -qx "$STACK"; then
        say "no stack $STACK on this swarm: nothing to remove"
        return 0
    fi
    docker stack rm "$STACK" >&2
    # `stack rm` returns before the tasks are gone; a deploy right after would race their
    # network's removal.
    local deadline=$((SECONDS + 60))
    while docker network ls -q --filter "label=com.docker.stack.namespace=$STACK" | grep -q . ||
        docker ps -q --filter "label=com.docker.stack.namespace=$STACK" | grep -q .; do
        [ "$SECONDS" -lt "$deadline" ] || die "the stack's tasks or network are still there after 60s (docker stack ps $STACK)"
        sleep 1
    done
    say "stack $STACK removed"
}

cmd_swarm() {
    case "${1:-up}" in
    up) swarm_up ;;
    down) swarm_down ;;
    status)
        swarm_require_manager
        docker stack services "$STACK"
        docker stack ps "$STACK"
        ;;
    *) die "usage: ./setup.sh swarm [up|status|down]" ;;
    esac
}
