# Sourced by every scenario inside the container (real systemd as PID 1, host /usr read-only,
# everything else fresh). Results go to /x/results/<scenario>.txt: one PASS/FAIL line per check.

set -u
scenario=$1
results=/x/results
mkdir -p "$results"
out="$results/$scenario.txt"
: >"$out"
failures=0
exec 2>>"$results/$scenario.log"
set -x

# /etc starts empty (sysusers, tmpfiles and machine-id only): bring the host's PAM configuration
# and user-management defaults, which su, chpasswd, polkit's agent helper and useradd need.
for f in pam.d security login.defs default shells; do
    [[ -e /host-etc/$f && ! -e /etc/$f ]] && cp -a "/host-etc/$f" /etc/
done
# Debian's admin group (base-passwd's gid), which the socket policy and polkit use.
getent group sudo >/dev/null || groupadd -g 27 sudo

pass() { echo "PASS $*" >>"$out"; }
fail() { echo "FAIL $*" >>"$out"; failures=$((failures + 1)); }
# check DESCRIPTION COMMAND...: the command's success is the check's.
check() {
    local what=$1; shift
    if "$@" >>"$results/$scenario.log" 2>&1; then pass "$what"; else fail "$what"; fi
}
# expect DESCRIPTION EXPECTED ACTUAL
expect() {
    if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1 (expected '$2', got '$3')"; fi
}
# wait_for DESCRIPTION SECONDS COMMAND...
wait_for() {
    local what=$1 secs=$2; shift 2
    for _ in $(seq $((secs * 10))); do
        "$@" >/dev/null 2>&1 && { pass "$what"; return 0; }
        sleep 0.1
    done
    fail "$what (waited ${secs}s)"
}

# mkuser NAME UID [GROUP]: a login user with a home and the password "NAME-password".
mkuser() {
    local name=$1 uid=$2 group=${3:-}
    useradd -m -u "$uid" -s /bin/bash ${group:+-G "$group"} "$name"
    echo "$name:$name-password" | chpasswd
}

home_of() { getent passwd "$1" | cut -d: -f6; }

# as_user USER COMMAND...: run COMMAND as USER with a clean environment, outside any session.
# Untraced: callers capture its standard error, which must hold only COMMAND's.
as_user() {
    { local -; set +x; } 2>/dev/null
    local user=$1; shift
    setpriv --reuid "$user" --regid "$(id -g "$user")" --init-groups \
        env -i PATH=/usr/bin:/bin HOME="$(home_of "$user")" "$@"
}

# as USER [--stdin TEXT] ARGS...: run the client as USER; sets $rc, $stdout, $stderr.
as() {
    local user=$1; shift
    local stdin=""
    if [[ $1 == --stdin ]]; then stdin=$2; shift 2; fi
    set +e
    stdout=$(printf '%s' "$stdin" | as_user "$user" multipass "$@" 2>/tmp/stderr)
    rc=$?
    set -e
    stderr=$(cat /tmp/stderr)
    echo "[$user] multipass $* -> $rc; stdout=$stdout; stderr=$stderr" >>"$results/$scenario.log"
}

mode_of() { stat -c '%a %U:%G' "$1"; }

finish() {
    if ((failures)); then echo fail >"$results/$scenario.status"; else echo ok >"$results/$scenario.status"; fi
    exit 0
}

set -e
wait_for "multipass.socket is listening" 30 systemctl is-active --quiet multipass.socket
