#!/bin/bash
# 4b. After the reboot: trust, passphrase and the socket's mode are still right.
source /x/lib.sh persist-check
# Same users, same uids, homes from the bind mount.
useradd -M -u 2001 -G sudo -s /bin/bash alice
useradd -M -u 2003 -s /bin/bash carol

expect "socket open at boot since the store is not empty" "666 root:root" "$(mode_of /run/multipass_socket)"
as carol list; expect "carol is still trusted" 0 "$rc"
as alice get local.passphrase; expect "the passphrase is still set" true "$stdout"
finish
