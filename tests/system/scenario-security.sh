#!/bin/bash
# 5. The online exposure score, no core dumps, and trust events in the journal (structured
# fields, and who and which certificate in the message text).
source /x/lib.sh security
mkuser alice 2001 sudo
mkuser bob 2002

score=$(systemd-analyze security multipass.service --no-pager | sed -n 's/.*Overall exposure level for multipass.service: \([0-9.]*\).*/\1/p')
echo "exposure: $score" >>"$out"
# (No awk here: /etc/alternatives, where Debian's awk link points, is empty in the container.)
check "exposure score $score <= 1.5" /usr/bin/python3 -c "import sys; sys.exit(not float('$score') <= 1.5)"

# The installed executables start with libc alone (multipass-linkage): the loader initialises no
# other library.
for exe in /usr/bin/multipass /usr/sbin/multipassd /usr/libexec/multipassd-helper; do
    trace=$(LD_DEBUG=libs "$exe" --version 2>&1 >/dev/null)
    inits=$(sed -n 's/.*calling init: .*\///p' <<<"$trace" | grep -v '^ld-linux' | sort -u | tr '\n' ' ')
    expect "$exe initialises libc alone at start" "libc.so.6 " "$inits"
done

# The socket's start hook (the helper as root, applying the socket policy) runs confined too, and
# still did its work: the socket is restricted to the admin group until a first client.
expect "the socket's hook has no new privileges" yes "$(systemctl show -p NoNewPrivileges --value multipass.socket)"
expect "the socket's hook has three capabilities" "cap_chown cap_dac_read_search cap_fowner" \
    "$(systemctl show -p CapabilityBoundingSet --value multipass.socket)"
expect "the socket's hook sees the file system read-only" strict "$(systemctl show -p ProtectSystem --value multipass.socket)"
expect "the hook restricted the socket" "660 root:sudo" "$(mode_of /run/multipass_socket)"

as alice list; expect "alice trusted" 0 "$rc"
# The first client made the daemon ask the helper to open the socket: the helper's audit event is
# a journal entry with fields, as the daemon's are.
wait_for "the helper's socket-access event has journal fields" 10 \
    sh -c 'journalctl --no-pager -o cat SYSLOG_IDENTIFIER=multipassd-helper EVENT=socket-access | grep -q .'
as bob list; expect "bob refused" 2 "$rc"

# No core files, and neither program dumpable (the daemon and the helper, which the first client
# activated to open the socket, both hold secrets in memory).
for unit in multipass.service multipassd-helper.service; do
    expect "$unit has LimitCORE=0" 0 "$(systemctl show -p LimitCORE --value "$unit")"
done
pid=$(systemctl show -p MainPID --value multipass.service)
expect "the daemon runs as multipassd" multipassd "$(ps -o user= -p "$pid")"
expect "its /proc/PID belongs to root: not dumpable" root "$(stat -c %U /proc/"$pid"/status)"
expect "its capability bounding set is empty" 0000000000000000 \
    "$(sed -n 's/^CapBnd:\t//p' /proc/"$pid"/status)"
hpid=$(systemctl show -p MainPID --value multipassd-helper.service)
# The helper runs as root: what shows it is that root without CAP_SYS_PTRACE may not look into it
# (a dumpable process of root with no more capabilities may be looked into: the control).
no_ptrace() { setpriv --inh-caps -sys_ptrace --bounding-set -sys_ptrace "$@"; }
peek() { no_ptrace readlink -v /proc/"$1"/exe; }
no_peek() { ! peek "$1"; }
check "the helper is running" test "$hpid" -gt 0
check "the helper is not dumpable" no_peek "$hpid"
# Not through the function: a function run in the background is a subshell of ours, with all our
# capabilities, and $! would be that subshell.
setpriv --inh-caps -sys_ptrace --bounding-set -sys_ptrace sleep 30 &
control=$!
sleep 0.2
check "control: a dumpable process of root can be looked into" peek "$control"
kill "$control" 2>/dev/null
sleep 1
journalctl -u multipass.service -o json --no-pager >/tmp/journal.json
check "journal has EVENT=trusted HOW=first-client UID=2001" bash -c \
    "grep '\"EVENT\":\"trusted\"' /tmp/journal.json | grep '\"HOW\":\"first-client\"' | grep -q '\"UID\":\"2001\"'"
check "journal has EVENT=refused for bob (UID=2002)" bash -c \
    "grep '\"EVENT\":\"refused\"' /tmp/journal.json | grep -q '\"UID\":\"2002\"'"
check "journalctl can select them by field" bash -c \
    "journalctl --no-pager -o cat EVENT=trusted | grep -q 'trusted client'"
check "the trusted line's text names alice and her certificate" bash -c \
    "journalctl --no-pager -o cat EVENT=trusted | grep -Eq '^trusted client [0-9a-f]{64} \\(user alice, uid 2001\\) as the first client$'"
check "the refused line's text names bob and his certificate" bash -c \
    "journalctl --no-pager -o cat EVENT=refused | grep -Eq '^refused client [0-9a-f]{64} \\(user bob, uid 2002\\): not trusted$'"
journalctl -o verbose --no-pager EVENT=trusted >>"$results/security.log" 2>&1 || true
finish
