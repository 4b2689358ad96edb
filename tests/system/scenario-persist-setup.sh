#!/bin/bash
# 4a. Trust and a passphrase, then an idle exit; the state directory and homes survive the
# container (bind mounts), which is then booted again (4b).
source /x/lib.sh persist-setup
mkuser alice 2001 sudo
mkuser carol 2003
mkdir -p /etc/systemd/system/multipass.service.d
printf '[Service]\nExecStart=\nExecStart=/usr/sbin/multipassd --idle-timeout 3\n' \
    >/etc/systemd/system/multipass.service.d/idle.conf
systemctl daemon-reload

as alice list; expect "alice trusted" 0 "$rc"
as alice --stdin $'persist pass\npersist pass\n' set local.passphrase; expect "passphrase set" 0 "$rc"
as carol --stdin $'persist pass\n' authenticate; expect "carol authenticates" 0 "$rc"
wait_for "the daemon exits when idle" 20 bash -c '! systemctl is-active --quiet multipass.service'
expect "the idle exit is a success" success "$(systemctl show -p Result --value multipass.service)"
expect "with the dedicated status 75" 75 "$(systemctl show -p ExecMainStatus --value multipass.service)"
as carol list; expect "the next client starts it again" 0 "$rc"
finish
