#!/usr/bin/env bash
# The main job: build, start multipassd on a private socket and state directory, and walk through
# the authentication flow of the reference document with real users (as root), or with the
# current user alone (otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
cargo build --workspace --locked
bin="$PWD/target/debug"

work=$(mktemp -d /tmp/multipass-demo.XXXXXX)
chmod 0755 "$work"
sock="$work/multipass_socket"
data="$work/data"
suffix=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
admins="mpdemo-adm-$suffix"
users=()
daemon_pid=""

cleanup() {
    [[ -n $daemon_pid ]] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    for u in "${users[@]}"; do userdel "$u" 2>/dev/null || true; done
    getent group "$admins" >/dev/null && groupdel "$admins" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

start_daemon() {
    "$bin/multipassd" --address "unix:$sock" --data-dir "$data" --admin-group "$admins" \
        2>>"$work/multipassd.log" &
    daemon_pid=$!
    for _ in $(seq 100); do [[ -S $sock ]] && return; sleep 0.05; done
    echo "multipassd did not start:" >&2; cat "$work/multipassd.log" >&2; exit 1
}

# Run the client as USER, showing the command like a terminal would.
as() {
    local user=$1; shift
    local stdin=""
    if [[ $1 == --stdin ]]; then stdin=$2; shift 2; fi
    local home="$work/home/$user"
    printf '\n%s$ multipass %s\n' "$user" "$*"
    local cmd=(env -i PATH=/usr/bin:/bin HOME="$home" XDG_DATA_HOME="$home/.local/share"
        MULTIPASS_SERVER_ADDRESS="unix:$sock" MULTIPASS_ROOT_CERT="$data/multipass_root_cert.pem"
        "$bin/multipass" "$@")
    if [[ $(id -u) -eq 0 && $user != root ]]; then
        cmd=(setpriv --reuid "$user" --regid "$(id -g "$user")" --init-groups "${cmd[@]}")
    fi
    set +e
    printf '%s' "$stdin" | "${cmd[@]}"
    local rc=$?
    set -e
    echo "[exit $rc]"
}

if [[ $(id -u) -ne 0 ]]; then
    echo "Not root: a one-user walkthrough (run as root for the multi-user one)."
    start_daemon
    me=$(id -un)
    as "$me" list
    as "$me" --stdin $'demo-pass\ndemo-pass\n' set local.passphrase
    as "$me" get local.passphrase
    exit 0
fi

groupadd "$admins"
mkuser() {
    useradd --no-create-home --home-dir "$work/home/$1" --shell /usr/sbin/nologin "${@:2}" "$1"
    users+=("$1")
    install -d -o "$1" -m 0700 "$work/home/$1"
}
alice="mpdemo-a-$suffix"; bob="mpdemo-b-$suffix"; carol="mpdemo-c-$suffix"
mkuser "$alice" -G "$admins"
mkuser "$bob"
mkuser "$carol"

echo "Users: $alice (administrator, group $admins), $bob and $carol (not administrators)."
start_daemon
ls -l "$sock"

echo; echo "== The first administrator to use the service is trusted; the socket opens."
as "$alice" list
ls -l "$sock"

echo; echo "== Anyone else is not authenticated, and stuck as in the reference document."
as "$bob" list
as "$bob" --stdin $'x\n' authenticate
as "$bob" --stdin $'x\nx\n' set local.passphrase

echo; echo "== The documented recovery: append the certificate to the trust store (no restart needed)."
cat "$work/home/$bob/.local/share/multipass-client-certificate/multipass_cert.pem" \
    >>"$data/authenticated-certs/multipass_client_certs.pem"
as "$bob" list

echo; echo "== The administrator sets a passphrase; $carol authenticates with it."
as "$alice" --stdin $'correct horse battery\ncorrect horse battery\n' set local.passphrase
as "$alice" get local.passphrase
as "$carol" --stdin $'wrong guess\n' authenticate
as "$carol" --stdin $'correct horse battery\n' authenticate
as "$carol" list
as "$carol" version

echo; echo "== Trust store (metadata before each certificate):"
grep -v '^[A-Za-z0-9+/=]*$' "$data/authenticated-certs/multipass_client_certs.pem" | grep -v -- '-----END'
echo; echo "== Daemon log:"
cat "$work/multipassd.log"
