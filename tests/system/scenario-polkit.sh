#!/bin/bash
# 3. An administrator who is not trusted gets trusted through `multipass authenticate --admin`,
# answering polkit's password prompt, in a real logind session.
source /x/lib.sh polkit
mkuser dave 2004 sudo

as root list; expect "root became the first client" 0 "$rc"
as dave list; expect "dave (admin) is not authenticated" 2 "$rc"

# A login session (pam_systemd via su -l) with a terminal (a pty the answering script drives).
# su's --pty keeps a controlling terminal for the command (util-linux su otherwise detaches it).
rc=0
/usr/bin/python3 /x/pty_answer.py dave-password \
    su -l dave --pty -c 'loginctl show-session "$XDG_SESSION_ID" -p Active -p Class; multipass authenticate --admin' \
    >"$results/polkit.pty" 2>&1 || rc=$?
expect "authenticate --admin with the password prompt succeeds" 0 "$rc"
check "polkit asked for a password" grep -qi "password" "$results/polkit.pty"
check "the client reports it is trusted" grep -q "now trusted" "$results/polkit.pty"
as dave list; expect "dave lists after authenticate --admin" 0 "$rc"
check "the store records how: admin for dave" grep -q "user: dave" /var/lib/multipassd/authenticated-certs/multipass_client_certs.pem

# (`pkexec multipassd-helper trust-certificate` is the documented alternative; under this
# container polkit's agent helper fails it with "No session for cookie", so it is not checked
# here: see the helper issue's note.)
gpasswd -d dave sudo

# A wrong password is refused, and nothing changes.
mkuser erin 2005 sudo
rc=0
/usr/bin/python3 /x/pty_answer.py not-her-password \
    su -l erin --pty -c 'multipass authenticate --admin' >"$results/polkit-wrong.pty" 2>&1 || rc=$?
check "a wrong password is refused" test "$rc" -ne 0
as erin list; expect "erin is still not trusted" 2 "$rc"
finish
