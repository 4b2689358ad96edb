#!/bin/bash
# 5. An upgrade, a reinstall and a downgrade of the packages while trusted users run commands:
# none fails, the state and the daemon's certificate stay as they were, and no helper serves on
# from a replaced program. (Booted over an overlay of the whole host, so that dpkg can write.)
source /x/lib.sh upgrade
# A container image's policy would make deb-systemd-invoke skip what an upgrade does on a host.
if [[ -e /usr/sbin/policy-rc.d ]]; then mv /usr/sbin/policy-rc.d /root/policy-rc.d.image; fi
mkuser alice 2101 sudo
mkuser bob 2102

as alice list; expect "alice is the first client" 0 "$rc"
as alice --stdin $'upgrade pass\nupgrade pass\n' set local.passphrase
expect "passphrase set" 0 "$rc"
as bob --stdin $'upgrade pass\n' authenticate; expect "bob authenticates" 0 "$rc"
state() {
    (cd /var/lib/multipassd && sha256sum multipass_root_cert.pem certificates/* \
        authenticated-certs/multipass_client_certs.pem multipassd.conf)
}
state >/tmp/state.before
check "the helper answers (bus-activated)" busctl --system call io.multipass.Helper1 \
    /io/multipass/Helper1 org.freedesktop.DBus.Peer Ping

# Each user runs `multipass list` over and over; one exit status per line.
loop() {
    local status
    while [[ ! -e /tmp/stop-loops ]]; do
        status=0
        as_user "$1" multipass list >/dev/null 2>>"/tmp/loop-$1.err" || status=$?
        echo "$status" >>"/tmp/loop-$1"
    done
}
# And calls one of the helper's methods (D-Bus activating it when it is not running) every
# 50 ms, with a certificate it refuses before anything else: each call must be answered, never
# lost with a helper leaving, nor left waiting for an activation that an upgrade cancelled
# (D-Bus gives up on it after 25 s).
calls() {
    local answer
    while [[ ! -e /tmp/stop-loops ]]; do
        answer=$(timeout 10 busctl --system call io.multipass.Helper1 /io/multipass/Helper1 \
            io.multipass.Helper1 TrustCertificate ss "not a certificate" "" 2>&1) || true
        if [[ $answer == *PEM* ]]; then echo 0; else echo "1 $answer"; fi >>/tmp/calls
        sleep 0.05
    done
}
socket_started() { systemctl show -p ActiveEnterTimestampMonotonic --value multipass.socket; }
socket_before=$(socket_started)
loop alice & loop bob & calls &
sleep 2
version=$(cat /x/debs/version)
for v in "$version+1" "$version+1" "$version"; do
    rc=0
    DEBIAN_FRONTEND=noninteractive dpkg -i /x/debs/multipass-client_"$v"_*.deb \
        /x/debs/multipass_"$v"_*.deb >>"$results/$scenario.log" 2>&1 || rc=$?
    expect "dpkg -i $v" 0 "$rc"
    sleep 2
done
touch /tmp/stop-loops
wait
commands=$(cat /tmp/loop-alice /tmp/loop-bob | wc -l)
failed=$(cat /tmp/loop-alice /tmp/loop-bob | grep -cv '^0$' || true)
expect "$commands commands during an upgrade, a reinstall and a downgrade: none failed" 0 "$failed"
cat /tmp/loop-*.err >>"$results/$scenario.log" 2>/dev/null
check "more than a few commands ran meanwhile" test "$commands" -ge 20
answered=$(cat /tmp/calls 2>/dev/null | wc -l)
failed=$(grep -cv '^0$' /tmp/calls 2>/dev/null || true)
check "the helper was called meanwhile" test "$answered" -ge 20
expect "$answered calls of the helper meanwhile: each answered, none lost or waiting 10 s" 0 "$failed"
grep -v '^0$' /tmp/calls >>"$results/$scenario.log" || true
expect "the socket was not restarted (its unit did not change)" "$socket_before" "$(socket_started)"
state >/tmp/state.after
check "the state and the daemon's certificates are unchanged" cmp /tmp/state.before /tmp/state.after
expect "the socket is still open to all" "666 root:root" "$(mode_of /run/multipass_socket)"
wait_for "neither the daemon nor the helper runs on from a replaced program" 10 \
    bash -c '! for e in /proc/[0-9]*/exe; do readlink "$e"; done 2>/dev/null | grep -qE "multipassd(-helper)? \(deleted\)"'
check "the helper answers again" busctl --system call io.multipass.Helper1 \
    /io/multipass/Helper1 org.freedesktop.DBus.Peer Ping
helper=$(systemctl show -p MainPID --value multipassd-helper.service)
expect "... from the installed program" /usr/libexec/multipassd-helper "$(readlink /proc/"$helper"/exe)"
as bob list; expect "bob is still trusted" 0 "$rc"
finish
