#!/usr/bin/env bash
# The main job: build, start multipassd on a private socket and state directory, and walk through
# the whole story with real users (as root): the first administrator, the stuck user of the
# reference document and the documented recovery, the passphrase, root as a client of its own,
# one-time enrollment tokens, `trust list` and `trust remove`. Without root, a one-user walkthrough.
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
    [[ $(id -u) -eq 0 ]] && getent group "$admins" >/dev/null && groupdel "$admins" 2>/dev/null
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

# Run the client as USER, showing the command like a terminal would. `--stdin TEXT` pipes TEXT in
# (what a person would type at the prompts); `--sudo-from USER` runs it as root the way `sudo`
# run by USER would. The output is kept in $last.
as() {
    local user=$1; shift
    local stdin="" sudo_from=""
    while [[ $1 == --* ]]; do
        case $1 in
            --stdin) stdin=$2 ;;
            --sudo-from) sudo_from=$2 ;;
        esac
        shift 2
    done
    local home="$work/home/$user"
    if [[ -n $sudo_from ]]; then
        printf '\n%s$ sudo multipass %s\n' "$sudo_from" "$*"
    else
        printf '\n%s$ multipass %s\n' "$user" "$*"
    fi
    local cmd=(env -i PATH=/usr/bin:/bin HOME="$home" XDG_DATA_HOME="$home/.local/share"
        MULTIPASS_SERVER_ADDRESS="unix:$sock" MULTIPASS_ROOT_CERT="$data/multipass_root_cert.pem"
        ${sudo_from:+SUDO_USER=$sudo_from} "$bin/multipass" "$@")
    if [[ $(id -u) -eq 0 && $user != root ]]; then
        cmd=(setpriv --reuid "$user" --regid "$(id -g "$user")" --init-groups "${cmd[@]}")
    fi
    set +e
    last=$(printf '%s' "$stdin" | "${cmd[@]}" 2>&1)
    local rc=$?
    set -e
    printf '%s\n[exit %s]\n' "$last" "$rc"
}

if [[ $(id -u) -ne 0 ]]; then
    echo "Not root: a one-user walkthrough (run as root for the multi-user one)."
    # No group can be made without root: this user's own group is the admin group, so that
    # they are the administrator who becomes the first client.
    admins=$(id -gn)
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
dave="mpdemo-d-$suffix"; erin="mpdemo-e-$suffix"
mkuser "$alice" -G "$admins"
for u in "$bob" "$carol" "$dave" "$erin"; do mkuser "$u"; done
install -d -m 0700 "$work/home/root"

echo "Users: $alice (administrator, group $admins); $bob, $carol, $dave and $erin (not administrators)."
start_daemon
ls -l "$sock"

echo; echo "== The first administrator to use the service is trusted; the socket opens."
as "$alice" list
ls -l "$sock"

echo; echo "== Anyone else is not authenticated, and stuck as in the reference document; set asks"
echo "   nothing before saying so."
as "$bob" list
as "$bob" --stdin $'x\n' authenticate
as "$bob" --stdin $'x\nx\n' set local.passphrase

echo; echo "== The documented recovery: append the certificate to the trust store (no restart needed)."
cat "$work/home/$bob/.local/share/multipass-client-certificate/multipass_cert.pem" \
    >>"$data/authenticated-certs/multipass_client_certs.pem"
as "$bob" list

echo; echo "== root is a client of its own: 'sudo' from $alice is not $alice's trusted client."
as root --sudo-from "$alice" --stdin $'p\np\n' set local.passphrase

echo; echo "== The administrator sets a passphrase (an empty answer changes nothing); $carol authenticates."
as "$alice" --stdin $'\n' set local.passphrase
as "$alice" --stdin $'correct horse battery\ncorrect horse battery\n' set local.passphrase
as "$alice" get local.passphrase
as "$carol" --stdin $'wrong guess\n' authenticate
as "$carol" --stdin $'correct horse battery\n' authenticate
as "$carol" list
as "$carol" list --snapshots
as "$carol" version
echo "   A trusted client's passphrase is checked all the same:"
as "$carol" --stdin $'wrong guess\n' authenticate

echo; echo "== One-time enrollment tokens: no shared secret; each works once."
as "$alice" trust token create --name dave-laptop --expires 10m
dave_token=$(printf '%s\n' "$last" | grep -o 'mpt_[0-9a-f]*' | head -1)
as "$dave" --stdin "$dave_token"$'\n' authenticate
as "$erin" --stdin "$dave_token"$'\n' authenticate
echo "   Without --name, the client is named after the user who redeems the token:"
as "$alice" trust token create
erin_token=$(printf '%s\n' "$last" | grep -o 'mpt_[0-9a-f]*' | head -1)
as "$erin" --stdin "$erin_token"$'\n' authenticate
as "$alice" trust token list

echo; echo "== Who is trusted, and taking trust back."
as "$alice" trust list
as "$alice" trust remove "$carol"
as "$carol" list
as "$alice" trust list --format yaml

echo; echo "== Trust store (metadata before each certificate):"
grep -v '^[A-Za-z0-9+/=]*$' "$data/authenticated-certs/multipass_client_certs.pem" | grep -v -- '-----END'
echo; echo "== Daemon log (audit events):"
grep ' audit: ' "$work/multipassd.log" || cat "$work/multipassd.log"
