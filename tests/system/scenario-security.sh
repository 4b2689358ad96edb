#!/bin/bash
# 5. The online exposure score, and structured trust events in the journal.
source /x/lib.sh security
mkuser alice 2001 sudo
mkuser bob 2002

score=$(systemd-analyze security multipass.service --no-pager | sed -n 's/.*Overall exposure level for multipass.service: \([0-9.]*\).*/\1/p')
echo "exposure: $score" >>"$out"
# (No awk here: /etc/alternatives, where Debian's awk link points, is empty in the container.)
check "exposure score $score <= 1.5" /usr/bin/python3 -c "import sys; sys.exit(not float('$score') <= 1.5)"

as alice list; expect "alice trusted" 0 "$rc"
as bob list; expect "bob refused" 2 "$rc"
sleep 1
journalctl -u multipass.service -o json --no-pager >/tmp/journal.json
check "journal has EVENT=trusted HOW=first-client UID=2001" bash -c \
    "grep '\"EVENT\":\"trusted\"' /tmp/journal.json | grep '\"HOW\":\"first-client\"' | grep -q '\"UID\":\"2001\"'"
check "journal has EVENT=refused for bob (UID=2002)" bash -c \
    "grep '\"EVENT\":\"refused\"' /tmp/journal.json | grep -q '\"UID\":\"2002\"'"
check "journalctl can select them by field" bash -c \
    "journalctl --no-pager -o cat EVENT=trusted | grep -q 'trusted a client'"
journalctl -o verbose --no-pager EVENT=trusted >>"$results/security.log" 2>&1 || true
finish
