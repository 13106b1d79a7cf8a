#!/usr/bin/env bash
# A real multi-node Docker Swarm on one Linux machine, for the lab's "beyond one host" chapter.
#
#   cluster.sh up [N]    N nodes (default 3, at most 9), each a dockerd in its own network
#                        namespace on a bridge, joined into one swarm, plus a local registry
#   cluster.sh down      remove everything `up` made (also the leftovers of a crashed run)
#   cluster.sh status    the nodes, and how to point the Docker CLI at the swarm
#   cluster.sh env       print `export DOCKER_HOST=...` for node 1 (eval "$(cluster.sh env)")
#   cluster.sh cut K     cut node K's link (a partition: nothing is refused, packets vanish)
#   cluster.sh heal K    bring node K's link back
#   cluster.sh crash K   kill node K's dockerd, containerd and containers (a host crash)
#
# Every name it makes starts with the fixed prefix `labsw` (namespaces labsw1.., veths labswv1..,
# bridge labswbr0) and everything else lives under LAB_CLUSTER_DIR (default /var/tmp/labsw), so
# `down` finds what an earlier run left behind. Requires Linux and root: it makes network
# namespaces, veth pairs, a bridge and an iptables rule, and runs one dockerd per node.
#
# Why it looks like this (see ../../docs/lab.md, "Beyond one host"):
#  - nodes are network namespaces, not VMs: each has its own IP and can be cut off or killed;
#  - `nsenter --net` (not `ip netns exec`, which remounts /sys and hides the cgroup mounts that
#    dockerd needs) enters only the node's network namespace; `unshare --uts` gives each node its
#    own hostname so `docker node ls` reads well;
#  - every node daemon gets `--config-file` pointing at `{}`: the host's daemon.json sets
#    data-root and the storage driver, which would clash with our flags;
#  - the vfs storage driver works inside the namespaces and our images are a few MB;
#  - the host's FORWARD policy is DROP (Docker sets it), so bridge-to-bridge traffic needs an
#    ACCEPT rule in DOCKER-USER before nodes can join;
#  - images reach the nodes through Debian's `docker-registry` (distribution 2.8) on the bridge
#    address, which every node daemon trusts with --insecure-registry.
set -euo pipefail

# A second cluster beside a learner's (the tests make one) takes another prefix and subnet.
PREFIX=${LAB_CLUSTER_PREFIX:-labsw}
SUBNET=${LAB_CLUSTER_SUBNET:-10.77.0}
BRIDGE=${PREFIX}br0
HOST_IP=$SUBNET.1
REGISTRY_PORT=5000
DIR=${LAB_CLUSTER_DIR:-/var/tmp/$PREFIX}
# `up` writes this into DIR; `down` deletes DIR only when it is there, so a LAB_CLUSTER_DIR that
# names a folder of the user's own is never wiped.
MARKER=.lab-stack-cluster
MAX_NODES=9

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'cluster: error: %s\n' "$*" >&2
    exit 1
}

node_ip() { printf '%s.%d' "$SUBNET" $((10 + $1)); }
node_sock() { printf 'unix://%s/n%d/docker.sock' "$DIR" "$1"; }
node_docker() {
    local n=$1
    shift
    docker -H "$(node_sock "$n")" "$@"
}
registry() { printf '%s:%d' "$HOST_IP" "$REGISTRY_PORT"; }

require_host() {
    [ "$(uname -s)" = Linux ] || die "the cluster needs Linux network namespaces; this is $(uname -s). Use a real swarm and ./setup.sh swarm instead."
    [ "$(id -u)" -eq 0 ] || die "the cluster needs root (it makes network namespaces, a bridge, veth pairs and an iptables rule). Run it with sudo."
    local tool
    for tool in ip nsenter unshare iptables dockerd containerd docker; do
        command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing (Debian: apt-get install iproute2 util-linux iptables docker.io)."
    done
    command -v docker-registry >/dev/null 2>&1 ||
        die "'docker-registry' is missing: the nodes pull the lab's images from it (Debian: apt-get install docker-registry)."
}

# Waits up to $2 seconds for command "${@:3}" to succeed.
wait_until() {
    local what=$1 secs=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
    [ -n "$what" ] && say "$what"
    return 0
}

# --- down: tolerant of anything half made ----------------------------------------------------

kill_pidfile() {
    local file=$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    # After a reboot the number may belong to someone else: ours name our directory.
    grep -qF "$DIR/" "/proc/$pid/cmdline" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    # dockerd stops its containers on SIGTERM; give it a while, then force.
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Kills every container whose containerd shim's command line matches $1, then the shim: the
# container's first process is the shim's child, and killing it ends its PID namespace.
kill_containers_of() {
    local shim
    for shim in $(pgrep -f "containerd-shim.*$1" || true); do
        pkill -KILL -P "$shim" 2>/dev/null || true
        kill -KILL "$shim" 2>/dev/null || true
    done
}

# Every process whose network namespace is one of ours (containers, shims, daemons): after a
# crash of an earlier run nothing else knows them.
netns_pids() {
    local ns=$1 inode pid
    inode=$(stat -L -c %i "/run/netns/$ns" 2>/dev/null) || return 0
    for pid in /proc/[0-9]*; do
        [ "$(stat -L -c %i "$pid/ns/net" 2>/dev/null)" = "$inode" ] && printf '%s\n' "${pid#/proc/}"
    done
    return 0
}

cmd_down() {
    require_host
    local n ns pids veth
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${PREFIX}[0-9]" || true); do
        n=${ns#"$PREFIX"}
        kill_pidfile "$DIR/n$n/pid"
        # Before the shims go with the namespace's processes: their children (the containers,
        # in namespaces of their own) would be orphaned and keep running.
        kill_containers_of "$DIR/n$n/"
        pids=$(netns_pids "$ns")
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
        fi
        ip netns del "$ns" 2>/dev/null || true
    done
    # Containers of a killed daemon have network namespaces of their own: find them through
    # their shims, whose command line names our exec root.
    kill_containers_of "$DIR/"
    pkill -KILL -f "containerd.*$DIR/" 2>/dev/null || true
    kill_pidfile "$DIR/registry.pid"
    for veth in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^${PREFIX}v[0-9]" || true); do
        ip link del "$veth" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    while iptables -D DOCKER-USER -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; do :; done
    while iptables -D INPUT -i "$BRIDGE" -j ACCEPT 2>/dev/null; do :; done
    if [ -f "$DIR/$MARKER" ]; then
        # A crashed daemon can leave mounts (shm, vfs layers) under its roots.
        local m
        for m in $(awk -v d="$DIR/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
            umount -l "$m" 2>/dev/null || true
        done
        rm -rf "$DIR"
    elif [ -d "$DIR" ]; then
        say "left $DIR alone: it was not made by cluster up (no $MARKER in it)"
    fi
    say "cluster removed (namespaces ${PREFIX}N, bridge $BRIDGE, iptables rule, $DIR)"
}

# --- up --------------------------------------------------------------------------------------

make_bridge() {
    ip link add "$BRIDGE" type bridge
    ip addr add "$HOST_IP/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    # Docker's FORWARD policy is DROP and DOCKER-USER its hook; without the host's dockerd
    # (no such chain) nothing drops bridge traffic and no rule is needed.
    if iptables -n -L DOCKER-USER >/dev/null 2>&1; then
        iptables -I DOCKER-USER -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
    fi
    # Hosts with a restrictive INPUT policy would drop the nodes' pulls from the registry.
    iptables -I INPUT -i "$BRIDGE" -j ACCEPT
}

start_registry() {
    mkdir -p "$DIR/registry"
    cat >"$DIR/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/registry
http:
  addr: $(registry)
EOF
    docker-registry serve "$DIR/registry.yml" >"$DIR/registry.log" 2>&1 &
    echo $! >"$DIR/registry.pid"
    wait_until "registry listening on $(registry)" 20 bash -c "exec 3<>/dev/tcp/$HOST_IP/$REGISTRY_PORT" ||
        die "the registry did not start; its log: $DIR/registry.log"
}

start_node() {
    local n=$1 ns=$PREFIX$1 ip
    ip=$(node_ip "$n")
    ip netns add "$ns"
    ip link add "${PREFIX}v$n" type veth peer name eth0 netns "$ns"
    ip link set "${PREFIX}v$n" master "$BRIDGE" up
    nsenter --net="/run/netns/$ns" ip addr add "$ip/24" dev eth0
    nsenter --net="/run/netns/$ns" ip link set eth0 up
    nsenter --net="/run/netns/$ns" ip link set lo up
    nsenter --net="/run/netns/$ns" ip route add default via "$HOST_IP"
    # The node daemons run with --iptables=false (their rules would land in the node's netns,
    # but Docker's chains there are not needed for anything else), so containers reaching past
    # their node (to a database on this machine, say) need their source address rewritten to
    # the node's, or the replies would never find their way back.
    nsenter --net="/run/netns/$ns" iptables -t nat -A POSTROUTING -s 172.16.0.0/12 -o eth0 -j MASQUERADE
    mkdir -p "$DIR/n$n"
    # The node's own hostname (UTS namespace) is what `docker node ls` shows.
    nsenter --net="/run/netns/$ns" unshare --uts sh -c '
        hostname "$1"; shift
        exec "$@"' _ "${PREFIX}-node$n" \
        dockerd --config-file "$DIR/empty.json" \
        --data-root "$DIR/n$n/data" --exec-root "$DIR/n$n/exec" --pidfile "$DIR/n$n/pid" \
        -H "$(node_sock "$n")" --storage-driver vfs --bridge none \
        --iptables=false --ip6tables=false --insecure-registry "$(registry)" \
        >"$DIR/n$n/dockerd.log" 2>&1 &
}

cmd_up() {
    local nodes=${1:-3} n token
    if ! [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || [ "$nodes" -gt "$MAX_NODES" ]; then
        die "N must be a whole number of nodes from 1 to $MAX_NODES, got '$nodes'"
    fi
    require_host
    if ip link show "$BRIDGE" >/dev/null 2>&1 || [ -f "$DIR/$MARKER" ]; then
        say "removing what an earlier cluster left"
        cmd_down
    fi
    if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
        die "LAB_CLUSTER_DIR=$DIR exists and holds files that are not a cluster's; choose an empty or new directory"
    fi
    say "building a $nodes-node swarm under $DIR"
    mkdir -p "$DIR"
    touch "$DIR/$MARKER"
    echo '{}' >"$DIR/empty.json"
    make_bridge
    start_registry
    for n in $(seq 1 "$nodes"); do start_node "$n"; done
    for n in $(seq 1 "$nodes"); do
        wait_until "node $n: dockerd up ($(node_ip "$n"))" 60 node_docker "$n" info ||
            die "node $n's dockerd did not start; its log: $DIR/n$n/dockerd.log"
    done
    node_docker 1 swarm init --advertise-addr "$(node_ip 1)" >/dev/null
    token=$(node_docker 1 swarm join-token -q worker)
    for n in $(seq 2 "$nodes"); do
        node_docker "$n" swarm join --token "$token" "$(node_ip 1):2377" >/dev/null ||
            die "node $n could not join the swarm; its log: $DIR/n$n/dockerd.log"
    done
    # Ready, not just listed: a stack deployed before a node is Ready puts every task elsewhere.
    wait_until "" 60 bash -c "[ \"\$(docker -H $(node_sock 1) node ls --format '{{.Status}}' | grep -cx Ready)\" -eq $nodes ]" ||
        die "not every node joined and became Ready; see docker -H $(node_sock 1) node ls"
    # The balancer is placed on node 1 (a manager), so the lab answers at node 1's address.
    node_docker 1 node update --label-add lab-stack.balancer=true "${PREFIX}-node1" >/dev/null
    cmd_status
}

cmd_status() {
    [ -S "$DIR/n1/docker.sock" ] || die "no cluster is running (./setup.sh cluster up)"
    node_docker 1 node ls >&2
    cat >&2 <<EOF

The swarm's manager is node 1 ($(node_ip 1)); its registry is $(registry).
Point the Docker CLI at it, then deploy the lab through the registry:
  export DOCKER_HOST=$(node_sock 1)
  LAB_REGISTRY=$(registry) ./setup.sh swarm
The lab then answers on http://$(node_ip 1):8888/ (admin: http://$(node_ip 1):1936/ from this machine).
EOF
}

need_node() {
    [[ "${1:-}" =~ ^[0-9]+$ ]] && [ -e "/run/netns/$PREFIX$1" ] ||
        die "no node '${1:-}' (the nodes are numbered 1..N; see ./setup.sh cluster status)"
}

validate_inputs() {
    [[ "$DIR" =~ ^/.*[^/]$ ]] ||
        die "LAB_CLUSTER_DIR='$DIR' must be an absolute path without a trailing slash (it holds every node's data)"
    # Interface names are at most 15 characters: `${PREFIX}br0` and `${PREFIX}v9` must fit.
    [[ "$PREFIX" =~ ^[a-z]{2,10}$ ]] ||
        die "LAB_CLUSTER_PREFIX='$PREFIX' must be 2 to 10 lower-case letters (it prefixes namespace and interface names)"
    [[ "$SUBNET" =~ ^(10|192\.168|172\.(1[6-9]|2[0-9]|3[01]))\.[0-9]{1,3}(\.[0-9]{1,3})?$ ]] && [ "$(tr -cd . <<<"$SUBNET" | wc -c)" -eq 2 ] ||
        die "LAB_CLUSTER_SUBNET='$SUBNET' must be the first three numbers of a private /24, e.g. 10.77.0"
}

main() {
    local cmd=${1:-status}
    validate_inputs
    [ $# -gt 0 ] && shift
    case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) printf 'export DOCKER_HOST=%s\n' "$(node_sock 1)" ;;
    cut) need_node "${1:-}" && ip link set "${PREFIX}v$1" down && say "node $1 cut off" ;;
    heal) need_node "${1:-}" && ip link set "${PREFIX}v$1" up && say "node $1 back" ;;
    crash)
        need_node "${1:-}"
        # A crash: no SIGTERM, nothing stops cleanly.
        kill_containers_of "$DIR/n$1/"
        # shellcheck disable=SC2046
        kill -KILL $(netns_pids "$PREFIX$1") 2>/dev/null || true
        say "node $1 crashed (its dockerd, containerd and containers were killed)"
        ;;
    -h | --help | help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$cmd' (up [N], down, status, env, cut K, heal K, crash K)" ;;
    esac
}

main "$@"
