#!/bin/bash
# 2. The reference document's transcript with three users, including the documented recovery.
source /x/lib.sh transcript
mkuser alice 2001 sudo
mkuser bob 2002
mkuser carol 2003
store=/var/lib/multipassd/authenticated-certs/multipass_client_certs.pem
msg="The client is not authenticated with the Multipass service."

as alice list; expect "alice (admin) is trusted first" 0 "$rc"
as bob list
expect "bob is not authenticated (exit 2)" 2 "$rc"
expect "bob sees Multipass's message" "list failed: $msg" "$(head -1 <<<"$stderr")"
as bob --stdin $'guess\n' authenticate
expect "bob cannot authenticate: passphrase not set" \
    'authenticate failed: Passphrase is not set. Please `multipass set local.passphrase` with a trusted client.' \
    "$(head -1 <<<"$stderr")"
as bob --stdin $'x\nx\n' set local.passphrase
expect "bob cannot set the passphrase" "set failed: $msg" "$(head -1 <<<"$stderr")"

# The documented recovery: append, then restart the service.
cat /home/bob/.local/share/multipass-client-certificate/multipass_cert.pem | tee -a "$store" >/dev/null
check "systemctl restart multipass" systemctl restart multipass
as bob list; expect "bob is trusted after the recovery" 0 "$rc"

as alice --stdin $'s3cret pass\ns3cret pass\n' set local.passphrase
expect "alice sets the passphrase" 0 "$rc"
as carol --stdin $'wrong\n' authenticate
expect "carol's wrong passphrase is refused" "authenticate failed: Passphrase is not correct. Please try again." "$(head -1 <<<"$stderr")"
as carol --stdin $'s3cret pass\n' authenticate; expect "carol authenticates" 0 "$rc"
as carol list; expect "carol lists" 0 "$rc"
as carol get local.passphrase; expect "get local.passphrase prints true" true "$stdout"
hash=$(sed -n 's/^local.passphrase="\?\([^"]*\)"\?$/\1/p' /var/lib/multipassd/multipassd.conf)
check "the hash is Argon2id" grep -q '^\$argon2id\$' <<<"$hash"
check "neither hash nor passphrase in the journal" bash -c "! journalctl -u multipass --no-pager -o cat | grep -F -e '$hash' -e 's3cret pass'"

# What a new user reads after installing: the man pages and the shell completion.
# /etc is empty in the container: man reads the host's configuration, as on an installed system.
check "README.Debian says how to get in and back in" \
    bash -c 'zcat -f /usr/share/doc/multipass/README.Debian* | grep -q "authenticate --admin"'
check "man multipass-trust-token-create is installed" \
    man -C /host-etc/manpath.config -w multipass-trust-token-create
check "man multipassd(8) is installed" man -C /host-etc/manpath.config -w 8 multipassd
keys=$(bash -c 'source /usr/share/bash-completion/completions/multipass
    COMP_WORDS=(multipass get ""); COMP_CWORD=2; _multipass multipass "" get
    printf "%s\n" "${COMPREPLY[@]}"')
check "bash completion offers the settings keys after get" grep -qx local.passphrase <<<"$keys"
finish
