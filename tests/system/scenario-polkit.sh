#!/bin/bash
# 3. An administrator who is not trusted gets trusted through `multipass authenticate --admin`,
# answering polkit's password prompt, in a real logind session.
source /x/lib.sh polkit
store=/var/lib/multipassd/authenticated-certs/multipass_client_certs.pem
mkuser dave 2004 sudo

as root list; expect "root became the first client" 0 "$rc"
as dave list; expect "dave (admin) is not authenticated" 2 "$rc"

# A login session (pam_systemd via su -l) with a terminal (a pty the answering script drives).
# su's --pty keeps a controlling terminal for the command (util-linux su otherwise detaches it).
rc=0
/usr/bin/python3 /x/pty_answer.py dave-password \
    su -l dave --pty -c 'loginctl --no-pager show-session "$XDG_SESSION_ID" -p Active -p Class; multipass authenticate --admin' \
    >"$results/polkit.pty" 2>&1 || rc=$?
expect "authenticate --admin with the password prompt succeeds" 0 "$rc"
check "polkit asked for a password" grep -qi "password" "$results/polkit.pty"
check "the client reports it is trusted" grep -q "now trusted" "$results/polkit.pty"
as dave list; expect "dave lists after authenticate --admin" 0 "$rc"
check "the store records how: admin for dave" grep -q "user: dave" /var/lib/multipassd/authenticated-certs/multipass_client_certs.pem

gpasswd -d dave sudo

# A wrong password is refused, and nothing changes.
mkuser erin 2005 sudo
rc=0
/usr/bin/python3 /x/pty_answer.py not-her-password \
    su -l erin --pty -c 'multipass authenticate --admin' >"$results/polkit-wrong.pty" 2>&1 || rc=$?
check "a wrong password is refused" test "$rc" -ne 0
as erin list; expect "erin is still not trusted" 2 "$rc"

# pkexec, the documented alternative, with the password prompt. polkit 122 (Debian 12) fails
# pkexec's own text agent with "No session for cookie" (a polkit bug, fixed upstream in 124),
# so the documented way starts a terminal agent for the shell first.
# pkttyagent closes its --notify-fd (here a FIFO's writing end) once it is registered.
cert='~/.local/share/multipass-client-certificate/multipass_cert.pem'
rc=0
/usr/bin/python3 /x/pty_answer.py erin-password su -l erin --pty -c \
    "f=\$(mktemp -u); mkfifo \$f; pkttyagent --process \$\$ --notify-fd 3 3>\$f & agent=\$!; cat \$f >/dev/null; rm -f \$f; pkexec /usr/libexec/multipassd-helper trust-certificate < $cert; rc=\$?; kill \$agent; exit \$rc" \
    >"$results/pkexec.pty" 2>&1 || rc=$?
expect "pkexec trust-certificate with the password prompt succeeds" 0 "$rc"
check "polkit asked erin for her password" grep -qi "password" "$results/pkexec.pty"
check "pkexec printed the fingerprint" grep -qE '[0-9a-f]{64}' "$results/pkexec.pty"
as erin list; expect "erin lists after pkexec trust-certificate" 0 "$rc"
check "the store names erin (from PKEXEC_UID)" grep -q "user: erin" "$store"

# pkexec without any agent, where a rules file authorizes a group: no password, no agent.
groupadd multipass-admins
groupadd multipass-trusters
mkuser gina 2006 multipass-admins
mkuser hank 2007
mkuser ivan 2008 multipass-trusters
mkdir -p /etc/polkit-1/rules.d
cat >/etc/polkit-1/rules.d/50-multipass-admins.rules <<'RULES'
polkit.addRule(function(action, subject) {
    if ((action.id == "io.multipass.trust-client" || action.id == "io.multipass.set-passphrase") &&
        subject.isInGroup("multipass-admins")) {
        return polkit.Result.YES;
    }
    // Trust alone: pkexec must tell the two actions apart by the helper's first argument.
    if (action.id == "io.multipass.trust-client" && subject.isInGroup("multipass-trusters")) {
        return polkit.Result.YES;
    }
});
RULES
systemctl restart polkit
# pkexec_as USER STDIN ARGS...: pkexec with no terminal and no session; sets $rc and $pk_out.
pkexec_as() {
    local user=$1 stdin=$2; shift 2
    set +e
    pk_out=$(as_user "$user" pkexec /usr/libexec/multipassd-helper "$@" <"$stdin" 2>&1)
    rc=$?
    set -e
    echo "[$user] pkexec multipassd-helper $* -> $rc; $pk_out" >>"$results/$scenario.log"
}
as gina list; expect "gina is not trusted yet" 2 "$rc"
as hank list; expect "hank is not trusted yet" 2 "$rc"
as ivan list; expect "ivan is not trusted yet" 2 "$rc"
home_cert() { echo "$(home_of "$1")/.local/share/multipass-client-certificate/multipass_cert.pem"; }
cp "$store" /tmp/store.before
cp /var/lib/multipassd/multipassd.conf /tmp/conf.before 2>/dev/null || : >/tmp/conf.before
printf 'from hank\n' >/tmp/hank-pass
pkexec_as hank "$(home_cert hank)" trust-certificate
check "hank (not authorized) is refused by pkexec" test "$rc" -ne 0
pkexec_as hank /tmp/hank-pass set-passphrase
check "hank cannot set the passphrase through pkexec" test "$rc" -ne 0
check "the store is unchanged after the refusals" cmp "$store" /tmp/store.before
check "the settings are unchanged after the refusals" cmp /tmp/conf.before <(cat /var/lib/multipassd/multipassd.conf 2>/dev/null)

printf 'from ivan\n' >/tmp/ivan-pass
pkexec_as ivan /tmp/ivan-pass set-passphrase
check "ivan (trust only) cannot set the passphrase through pkexec" test "$rc" -ne 0
check "the settings are unchanged after ivan's refusal" cmp /tmp/conf.before <(cat /var/lib/multipassd/multipassd.conf 2>/dev/null)
pkexec_as ivan "$(home_cert ivan)" trust-certificate
expect "ivan (trust only) trusts his certificate through pkexec" 0 "$rc"

pkexec_as gina "$(home_cert gina)" trust-certificate
expect "gina trusts her certificate through pkexec" 0 "$rc"
as gina list; expect "gina lists" 0 "$rc"
printf 'pkexec pass\n' >/tmp/gina-pass
pkexec_as gina /tmp/gina-pass set-passphrase
expect "gina sets the passphrase through pkexec (standard input)" 0 "$rc"
# A direct command records its audit event in the journal, as the service does, and shows the
# person running it no log line.
check "the direct command's audit event is in the journal" bash -c \
    'journalctl --no-pager -o cat SYSLOG_IDENTIFIER=multipassd-helper EVENT=passphrase-set | grep -q .'
check "... and not on the terminal" bash -c '! grep -q "event=" <<<"$1"' _ "$pk_out"
as hank --stdin $'pkexec pass\n' authenticate
expect "hank authenticates with that passphrase" 0 "$rc"
as hank list; expect "hank lists" 0 "$rc"
check "the passphrase never reached a command line or the journal" \
    bash -c '! journalctl -b --no-pager | grep -q "pkexec pass"'
rm -f /tmp/gina-pass /tmp/hank-pass /tmp/ivan-pass
# Through pkexec the paths are the package's: a caller cannot point the helper elsewhere.
pkexec_as gina "$(home_cert gina)" trust-certificate --data-dir /tmp
check "pkexec refuses caller-chosen paths" test "$rc" -ne 0
check "... and says why" grep -q "paths cannot be chosen through pkexec" <<<"$pk_out"
finish
