#!/bin/bash
# 1. Socket activation, the daemon's user and privileges, the socket policy.
source /x/lib.sh activation
mkuser alice 2001 sudo

expect "multipass.service is inactive after boot" inactive "$(systemctl is-active multipass.service || true)"
expect "socket is restricted to root:sudo 0660" "660 root:sudo" "$(mode_of /run/multipass_socket)"

as alice list
expect "first multipass list by an admin succeeds" 0 "$rc"
expect "it prints the empty list" "No instances found." "$stdout"
expect "multipass.service is active after the first client" active "$(systemctl is-active multipass.service)"
expect "systemctl show reports User=multipassd" multipassd "$(systemctl show -p User --value multipass.service)"
pid=$(systemctl show -p MainPID --value multipass.service)
for cap in CapEff CapPrm CapInh CapAmb; do
    expect "daemon $cap is zero" 0000000000000000 "$(sed -n "s/^$cap:\t//p" /proc/"$pid"/status)"
done
expect "daemon NoNewPrivs is 1" 1 "$(sed -n 's/^NoNewPrivs:\t//p' /proc/"$pid"/status)"
expect "daemon runs as multipassd" multipassd "$(ps -o user= -p "$pid")"
# Under the unit's system call filter the daemon still raises its soft open-file limit to the hard
# one, which leaves its connection cap at 1,024 (multipassd::descriptors).
expect "daemon's soft open-file limit is raised to its hard one" \
    "$(awk '/^Max open files/ {print $5}' /proc/"$pid"/limits)" \
    "$(awk '/^Max open files/ {print $4}' /proc/"$pid"/limits)"
wait_for "the helper opened the socket (root:root 0666)" 10 test "$(mode_of /run/multipass_socket)" = "666 root:root"
expect "the helper was bus-activated by systemd" active "$(systemctl is-active multipassd-helper.service || true)"

# The state wiped to start afresh, and the socket started again (as after a change of the admin
# group): the socket's hook finds no state directory, which means nobody is trusted; the socket
# comes back restricted, and the next administrator is the first client again.
systemctl stop multipass.socket multipass.service
rm -rf /var/lib/multipassd
systemctl start multipass.socket
expect "the socket starts with no state directory" active "$(systemctl is-active multipass.socket || true)"
expect "the socket is restricted again" "660 root:sudo" "$(mode_of /run/multipass_socket)"
as alice list
expect "the first client again once the state was wiped" 0 "$rc"

# Restarts in a row (an upgrade makes two or three) leave the socket listening: systemd's
# default start limit (5 in 10 s) would fail it, and lock everyone out.
for i in $(seq 8); do systemctl restart multipass.service; done
expect "8 restarts in a row: the socket still listens" active "$(systemctl is-active multipass.socket || true)"
as alice list
expect "... and serves" 0 "$rc"

# No command is lost across idle exits: commands timed around the idle timeout, so that some
# reach the socket as the daemon is deciding to exit, some just after it exited. The idle
# timeout is 1 s here (300 s as packaged), so that the daemon starts about every 1.5 s, under
# the packaged start limit.
mkdir -p /etc/systemd/system/multipass.service.d
printf '[Service]\nExecStart=\nExecStart=/usr/sbin/multipassd --idle-timeout 1\n' \
    >/etc/systemd/system/multipass.service.d/idle.conf
systemctl daemon-reload
systemctl stop multipass.service
lost=0
invocations=$(mktemp)
for i in $(seq 30); do
    # 0.90 to 1.14 s after the previous command ended.
    sleep "$(printf '%d.%02d' $(((90 + i * 7 % 25) / 100)) $(((90 + i * 7 % 25) % 100)))"
    as alice list
    [[ $rc == 0 ]] || lost=$((lost + 1))
    systemctl show -p InvocationID --value multipass.service >>"$invocations"
done
expect "30 commands around idle exits: none lost" 0 "$lost"
starts=$(sort -u "$invocations" | grep -c .)
check "the daemon exited and was started again between them (started $starts times)" test "$starts" -ge 5
expect "the idle exits were successes" success "$(systemctl show -p Result --value multipass.service)"
finish
