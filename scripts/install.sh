#!/bin/sh
# orch installer: curl -sfL https://get.orch.dev | sh -
#
# Installs the orch binary, a systemd service (orch.service for a server,
# orch-agent.service when ORCH_URL is set), its environment file, a kubectl
# symlink and orch-killall.sh / orch[-agent]-uninstall.sh. Running it again
# with the same settings changes nothing; with a new version or settings it
# updates what changed and restarts the service.
#
# Environment:
#   ORCH_URL                    server to join: installs an agent (https://HOST:6443)
#   ORCH_TOKEN                  join token (agent) or cluster token (server)
#   INSTALL_ORCH_EXEC           arguments of the orch command, e.g. "server --disable-agent"
#                               or "--node-label a=b" (the command defaults to server, or
#                               agent when ORCH_URL is set); the script's own arguments
#                               (curl ... | sh -s - --flag value) follow them
#   INSTALL_ORCH_VERSION        release to download (default: latest)
#   INSTALL_ORCH_DOWNLOAD_URL   base URL holding orch[-ARCH] and sha256sum-ARCH.txt
#                               (default: the GitHub release of INSTALL_ORCH_VERSION)
#   INSTALL_ORCH_SKIP_DOWNLOAD  true: use the binary already at INSTALL_ORCH_BIN_DIR/orch
#   INSTALL_ORCH_BINARY         path of a local orch binary to install (air-gapped)
#   INSTALL_ORCH_BIN_DIR        where orch, kubectl and the scripts go (/usr/local/bin)
#   INSTALL_ORCH_SYSTEMD_DIR    where the unit and its env file go (/etc/systemd/system)
#   INSTALL_ORCH_SKIP_START     true: do not start or restart the service
#   INSTALL_ORCH_SKIP_ENABLE    true: do not enable the service (implies skip start)
#   INSTALL_ORCH_SYMLINK        skip: no kubectl symlink; force: even if another
#                               kubectl is on PATH (default: only when none is)
#   INSTALL_ORCH_DATA_DIR       data directory the uninstaller removes (/var/lib/orch)
#   INSTALL_ORCH_CGROUP_ROOT    cgroup parent of the pods, for the killall script (orch)
#   INSTALL_ORCH_ROOT           prefix of /etc/orch, the data dir, /run/orch and
#                               /var/log/pods (for tests; default: none)
# Every other ORCH_* variable set is written to the env file too (orch reads
# its flags from ORCH_<FLAG> variables).
set -e
set -o noglob

info() { echo '[INFO] ' "$@"; }
warn() { echo '[WARN] ' "$@" >&2; }
fatal() {
    echo '[ERROR] ' "$@" >&2
    exit 1
}

# --- settings ---
setup_env() {
    ROOT=${INSTALL_ORCH_ROOT:-}
    BIN_DIR=${INSTALL_ORCH_BIN_DIR:-/usr/local/bin}
    SYSTEMD_DIR=${INSTALL_ORCH_SYSTEMD_DIR:-/etc/systemd/system}
    DATA_DIR=${ROOT}${INSTALL_ORCH_DATA_DIR:-/var/lib/orch}
    CONFIG_DIR=${ROOT}/etc/orch
    RUN_DIR=${ROOT}/run/orch
    LOG_DIR=${ROOT}/var/log/pods
    CGROUP_ROOT=${INSTALL_ORCH_CGROUP_ROOT:-orch}
    CGROUP_ROOT=${CGROUP_ROOT#/}
    case "${CGROUP_ROOT}" in
        '' | */* | . | ..) fatal "INSTALL_ORCH_CGROUP_ROOT '${INSTALL_ORCH_CGROUP_ROOT}' must be one path element" ;;
    esac

    # The arguments: INSTALL_ORCH_EXEC's words, then the script's own
    # (sh -s - server --flag ...); the command is the first if it is one.
    # shellcheck disable=SC2086 # splitting INSTALL_ORCH_EXEC into words is the point
    set -- ${INSTALL_ORCH_EXEC:-} "$@"
    case "${1:-}" in
        server | agent)
            CMD=$1
            shift
            ;;
        *)
            if [ -n "${ORCH_URL:-}" ]; then CMD=agent; else CMD=server; fi
            ;;
    esac
    if [ "${CMD}" = agent ] && [ -z "${ORCH_URL:-}" ]; then
        fatal "an agent needs ORCH_URL, the server to join (https://HOST:6443)"
    fi
    if [ "${CMD}" = agent ] && [ -z "${ORCH_TOKEN:-}" ] && [ -z "${ORCH_TOKEN_FILE:-}" ]; then
        case " $* " in
            *' --token '* | *' --token='* | *' -t '* | *' --token-file'*) ;;
            *) fatal "an agent needs ORCH_TOKEN, the server's join token (in <data-dir>/server/token on the server)" ;;
        esac
    fi
    EXEC_ARGS=$(systemd_args "${CMD}" "$@")

    if [ "${CMD}" = agent ]; then SERVICE=orch-agent; else SERVICE=orch; fi
    UNINSTALL=${BIN_DIR}/${SERVICE}-uninstall.sh
    KILLALL=${BIN_DIR}/orch-killall.sh
    UNIT=${SYSTEMD_DIR}/${SERVICE}.service
    ENV_FILE=${SYSTEMD_DIR}/${SERVICE}.service.env

    SUDO=
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || fatal "run as root, or install sudo"
        SUDO=sudo
    fi
    CHANGED=
    TMP_DIR=$(mktemp -d -t orch-install.XXXXXXXX)
    trap 'rm -rf "${TMP_DIR}"' EXIT INT TERM
}

# systemd_args quotes each argument for ExecStart: plain words stay as they
# are, others go in double quotes; % and $ are escaped for systemd.
systemd_args() {
    out=
    for a in "$@"; do
        a=$(printf '%s' "$a" | sed -e 's/%/%%/g' -e 's/\$/$$/g')
        case "$a" in
            *[!A-Za-z0-9_./=:,@+%\$-]* | '')
                a=$(printf '%s' "$a" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
                a="\"$a\""
                ;;
        esac
        out="${out}${out:+ }${a}"
    done
    printf '%s' "$out"
}

# --- files ---

# install_file SRC DEST MODE: installs SRC at DEST unless DEST already has
# that content and mode; records a change otherwise.
install_file() {
    if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s "$1" "$2" &&
        [ "$(stat -c %a "$2")" = "$3" ]; then
        return 0
    fi
    $SUDO mkdir -p "$(dirname "$2")"
    (umask 077 && $SUDO cp "$1" "$2.orch-tmp")
    $SUDO chmod "$3" "$2.orch-tmp"
    $SUDO mv -f "$2.orch-tmp" "$2"
    CHANGED="${CHANGED} $(basename "$2")"
    info "wrote $2"
}

# --- the binary ---
setup_arch() {
    case "${ARCH:-$(uname -m)}" in
        amd64 | x86_64) ARCH=amd64 SUFFIX= ;;
        arm64 | aarch64) ARCH=arm64 SUFFIX=-arm64 ;;
        *) fatal "unsupported architecture $(uname -m)" ;;
    esac
}

download() {
    if command -v curl >/dev/null 2>&1; then
        curl -sfL -o "$1" "$2" || fatal "download $2 failed"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$1" "$2" || fatal "download $2 failed"
    else
        fatal "curl or wget is needed to download orch"
    fi
}

sha256() { sha256sum "$1" | awk '{print $1}'; }

get_binary() {
    if [ -n "${INSTALL_ORCH_BINARY:-}" ]; then
        [ -f "${INSTALL_ORCH_BINARY}" ] || fatal "INSTALL_ORCH_BINARY ${INSTALL_ORCH_BINARY} is not a file"
        info "installing the local binary ${INSTALL_ORCH_BINARY}"
        install_file "${INSTALL_ORCH_BINARY}" "${BIN_DIR}/orch" 755
        return
    fi
    if [ "${INSTALL_ORCH_SKIP_DOWNLOAD:-}" = true ]; then
        [ -x "${BIN_DIR}/orch" ] || fatal "INSTALL_ORCH_SKIP_DOWNLOAD=true but there is no executable ${BIN_DIR}/orch"
        info "skipping the download: using ${BIN_DIR}/orch"
        return
    fi
    setup_arch
    if [ -n "${INSTALL_ORCH_DOWNLOAD_URL:-}" ]; then
        base=${INSTALL_ORCH_DOWNLOAD_URL%/}
    elif [ -n "${INSTALL_ORCH_VERSION:-}" ]; then
        base=https://github.com/orch-dev/orch/releases/download/${INSTALL_ORCH_VERSION}
    else
        base=https://github.com/orch-dev/orch/releases/latest/download
    fi
    name=orch${SUFFIX}
    info "downloading the checksums from ${base}/sha256sum-${ARCH}.txt"
    download "${TMP_DIR}/sha256sum" "${base}/sha256sum-${ARCH}.txt"
    want=$(awk -v f="${name}" '$2 == f || $2 == "*" f || $2 == "./" f {print $1; exit}' "${TMP_DIR}/sha256sum")
    case "$want" in
        '' | *[!0-9a-f]*) fatal "no sha256 for ${name} in ${base}/sha256sum-${ARCH}.txt" ;;
    esac
    if [ -f "${BIN_DIR}/orch" ] && [ "$(sha256 "${BIN_DIR}/orch")" = "$want" ]; then
        info "${BIN_DIR}/orch is already that release"
        install_file "${BIN_DIR}/orch" "${BIN_DIR}/orch" 755 # fix the mode if needed
        return
    fi
    info "downloading ${base}/${name}"
    download "${TMP_DIR}/orch" "${base}/${name}"
    got=$(sha256 "${TMP_DIR}/orch")
    if [ "$got" != "$want" ]; then
        fatal "checksum mismatch for ${base}/${name}: got ${got}, want ${want}; nothing was installed"
    fi
    install_file "${TMP_DIR}/orch" "${BIN_DIR}/orch" 755
}

# --- kubectl symlink ---
link_kubectl() {
    link=${BIN_DIR}/kubectl
    case "${INSTALL_ORCH_SYMLINK:-}" in
        skip) return ;;
        force) ;;
        *)
            if [ -e "$link" ] || [ -L "$link" ]; then
                :
            elif other=$(command -v kubectl 2>/dev/null) && [ -n "$other" ]; then
                warn "not linking ${link}: kubectl is already ${other} (INSTALL_ORCH_SYMLINK=force to link anyway; 'orch kubectl' works too)"
                return
            fi
            ;;
    esac
    if [ -L "$link" ] && [ "$(readlink "$link")" = orch ]; then
        return
    fi
    if [ -e "$link" ] && [ ! -L "$link" ]; then
        warn "not linking ${link}: a file is there ('orch kubectl' works too)"
        return
    fi
    $SUDO ln -sfn orch "$link"
    info "linked ${link} to orch"
}

# --- the killall and uninstall scripts ---
write_killall() {
    cat >"${TMP_DIR}/killall" <<EOF
#!/bin/sh
# Stops orch and everything it runs: the service, container monitors and
# containers, mounts, pod network links and namespaces, orch's nftables
# tables. Keeps the data. Written by the orch installer.
[ "\$(id -u)" -eq 0 ] || exec sudo "\$0" "\$@"
BIN_DIR='${BIN_DIR}'
SYSTEMD_DIR='${SYSTEMD_DIR}'
DATA_DIR='${DATA_DIR}'
RUN_DIR='${RUN_DIR}'
CGROUP_ROOT='${CGROUP_ROOT}'
EOF
    cat >>"${TMP_DIR}/killall" <<'EOF'

if command -v systemctl >/dev/null 2>&1; then
    for s in orch orch-agent; do
        [ -f "${SYSTEMD_DIR}/${s}.service" ] && systemctl stop "${s}"
    done
fi

# The cgroups of the pods, in every hierarchy (v1 controllers, v2).
cgroups() {
    for d in /sys/fs/cgroup/"${CGROUP_ROOT}" /sys/fs/cgroup/*/"${CGROUP_ROOT}"; do
        [ -d "$d" ] && echo "$d"
    done
}

# Processes of the orch binary: the server or agent, container monitors.
orch_pids() {
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        case "$exe" in
            "${BIN_DIR}/orch" | "${BIN_DIR}/orch (deleted)") echo "${p#/proc/}" ;;
        esac
    done
}

# Containers first (so monitors do not see them as crashed), a few rounds
# for what forks meanwhile.
for _ in 1 2 3 4 5; do
    pids=$(cgroups | while read -r d; do find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null; done | sort -un)
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null
    sleep 0.2
done
pids=$(orch_pids)
# shellcheck disable=SC2086
[ -n "$pids" ] && kill -9 $pids 2>/dev/null
cgroups | while read -r d; do
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
done

# Mounts under the data and run directories, deepest first: overlay root
# filesystems, volumes, shm, pinned pod network namespaces.
for dir in "${DATA_DIR}" "${RUN_DIR}"; do
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts |
        sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
done

# Pod network links: veths on the bridge, then the bridge, the VXLAN
# device and the DNS dummy.
if command -v ip >/dev/null 2>&1; then
    for l in $(ip -o link show master orch0 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
        ip link delete "$l"
    done
    for l in orch0 orch.1 orch-dns; do
        ip link show "$l" >/dev/null 2>&1 && ip link delete "$l"
    done
    # Routed pods: the pods' gateway on lo and orch's routes (protocols
    # 0x6f peers, 0x70 pods and the pod CIDR's unreachable route).
    ip -4 addr flush dev lo label lo:orch 2>/dev/null
    ip -4 route flush proto 111 2>/dev/null
    ip -4 route flush proto 112 2>/dev/null
fi

# orch's nftables tables only: never the ruleset, never another's table.
if command -v nft >/dev/null 2>&1; then
    nft list tables 2>/dev/null | while read -r _ family name; do
        case "$name" in
            orch*) nft delete table "$family" "$name" ;;
        esac
    done
fi

rm -rf "${RUN_DIR}"
exit 0
EOF
    install_file "${TMP_DIR}/killall" "${KILLALL}" 755
}

write_uninstall() {
    if [ "${SERVICE}" = orch ]; then OTHER=orch-agent; else OTHER=orch; fi
    cat >"${TMP_DIR}/uninstall" <<EOF
#!/bin/sh
# Removes orch: stops it and everything it runs (orch-killall.sh), then
# removes the service, the data, the configuration and the binary. Written
# by the orch installer.
[ "\$(id -u)" -eq 0 ] || exec sudo "\$0" "\$@"
SERVICE='${SERVICE}'
OTHER='${OTHER}'
BIN_DIR='${BIN_DIR}'
SYSTEMD_DIR='${SYSTEMD_DIR}'
DATA_DIR='${DATA_DIR}'
CONFIG_DIR='${CONFIG_DIR}'
RUN_DIR='${RUN_DIR}'
LOG_DIR='${LOG_DIR}'
EOF
    cat >>"${TMP_DIR}/uninstall" <<'EOF'

set -x
"${BIN_DIR}/orch-killall.sh"

if command -v systemctl >/dev/null 2>&1; then
    systemctl disable "${SERVICE}"
    systemctl reset-failed "${SERVICE}" 2>/dev/null
fi
rm -f "${SYSTEMD_DIR}/${SERVICE}.service" "${SYSTEMD_DIR}/${SERVICE}.service.env"
if command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload
fi

if [ -f "${SYSTEMD_DIR}/${OTHER}.service" ]; then
    # The other service still uses the binary and the data.
    rm -f "$0"
    exit 0
fi
for d in "${DATA_DIR}" "${CONFIG_DIR}" "${RUN_DIR}" "${LOG_DIR}"; do
    case "$d" in
        '' | / | /etc | /var | /var/lib | /run | /var/log) echo "refusing to remove '$d'" >&2 ;;
        *) rm -rf "$d" ;;
    esac
done
if [ -L "${BIN_DIR}/kubectl" ] && [ "$(readlink "${BIN_DIR}/kubectl")" = orch ]; then
    rm -f "${BIN_DIR}/kubectl"
fi
rm -f "${BIN_DIR}/orch" "${BIN_DIR}/orch-killall.sh" "$0"
EOF
    install_file "${TMP_DIR}/uninstall" "${UNINSTALL}" 755
}

# --- systemd ---
write_env() {
    # ORCH_URL and ORCH_TOKEN first, then every other ORCH_* variable.
    : >"${TMP_DIR}/env"
    for name in ORCH_URL ORCH_TOKEN $(env | sed -n 's/^\(ORCH_[A-Za-z0-9_]*\)=.*/\1/p' | sort | grep -v -x -e ORCH_URL -e ORCH_TOKEN); do
        eval "isset=\${${name}+x} value=\${${name}:-}"
        # shellcheck disable=SC2154 # isset is assigned by the eval
        [ -n "$isset" ] || continue
        case "$value" in
            *'
'*) fatal "${name} holds a newline" ;;
        esac
        value=$(printf '%s' "$value" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
        printf '%s="%s"\n' "$name" "$value" >>"${TMP_DIR}/env"
    done
    install_file "${TMP_DIR}/env" "${ENV_FILE}" 600
}

write_unit() {
    if [ "${CMD}" = agent ]; then what="agent (joins ${ORCH_URL})"; else what=server; fi
    cat >"${TMP_DIR}/unit" <<EOF
[Unit]
Description=orch ${what}
Documentation=https://github.com/orch-dev/orch
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=exec
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-${ENV_FILE}
# Containers run under monitors in this unit's cgroup: restarting or
# stopping orch must not kill them (orch-killall.sh does).
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=${BIN_DIR}/orch ${EXEC_ARGS}
EOF
    install_file "${TMP_DIR}/unit" "${UNIT}" 644
}

service() {
    if ! command -v systemctl >/dev/null 2>&1; then
        warn "systemctl not found: start orch yourself with ${BIN_DIR}/orch ${EXEC_ARGS}"
        return
    fi
    case " ${CHANGED} " in
        *" ${SERVICE}.service "*) $SUDO systemctl daemon-reload ;;
    esac
    [ "${INSTALL_ORCH_SKIP_ENABLE:-}" = true ] && return
    $SUDO systemctl enable "${SERVICE}" >/dev/null
    [ "${INSTALL_ORCH_SKIP_START:-}" = true ] && return
    if [ -n "${CHANGED}" ]; then
        info "starting ${SERVICE}"
        $SUDO systemctl restart "${SERVICE}"
    else
        $SUDO systemctl start "${SERVICE}"
    fi
}

{
    setup_env "$@"
    get_binary
    link_kubectl
    write_killall
    write_uninstall
    write_env
    write_unit
    service
    if [ -z "${CHANGED}" ]; then
        info "orch is up to date"
    fi
}
