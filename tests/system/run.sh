#!/usr/bin/env bash
# System tests (tier 3): install the built Debian packages on this machine, boot real systemd as
# PID 1 in systemd-nspawn over the host's /usr (-D / --volatile=yes), run each scenario inside,
# and report each scenario's result here. Then purge the packages and list what remains.
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

if [[ $(id -u) -ne 0 ]]; then
    echo "system tests need root" >&2
    exit 1
fi
# The packages install the same bus and polkit files that the helper's process tests install:
# one at a time, whichever checkout runs them.
mkdir -p /run/lock
exec 9>/run/lock/multipass-helper-tests.lock
flock 9
for p in systemd-container dbus polkitd; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$p"
done

version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg --print-architecture)
debs=(target/debian/multipass_"$version"_"$arch".deb target/debian/multipass-client_"$version"_"$arch".deb)
[[ -f ${debs[0]} && -f ${debs[1]} ]] || ./scripts/build-deb.sh || exit 1

echo "== installing ${debs[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall --allow-downgrades "${debs[@]/#/./}" || exit 1

work=$(mktemp -d /tmp/multipass-system.XXXXXX)
# Results stay in target/system-results for inspection.
# The upgrade scenario's overlay of the host is unmounted first, and nothing is removed across a
# mount that would remain.
trap 'rm -rf target/system-results; cp -r "$work/x/results" target/system-results 2>/dev/null
umount "$work/overlay/root" "$work/overlay/changes" 2>/dev/null; rm -rf --one-file-system "$work"' EXIT
mkdir -p "$work/x/results" "$work/state/lib" "$work/state/home"
cp tests/system/*.sh tests/system/*.py "$work/x/"

passed=0
failed=0
boot() {
    local name=$1; shift
    # The run unit's command takes no arguments here: one wrapper per scenario.
    printf '#!/bin/bash\nexec /x/scenario-%s.sh\n' "$name" >"$work/x/run-$name"
    chmod +x "$work/x/run-$name"
    timeout 300 systemd-nspawn --register=no --keep-unit -D / --volatile=yes -q --console=pipe \
        --bind="$work/x:/x" --bind-ro=/etc:/host-etc "$@" \
        -b systemd.firstboot=off \
        systemd.wants=dbus.socket systemd.wants=systemd-logind.service \
        systemd.wants=multipass.socket \
        systemd.run="/x/run-$name" \
        systemd.run_success_action=poweroff systemd.run_failure_action=poweroff \
        >"$work/x/results/$name.console" 2>&1
}
report() {
    local name=$1
    local status
    status=$(cat "$work/x/results/$name.status" 2>/dev/null || echo "did not finish")
    echo "== scenario $name: $status"
    sed 's/^/   /' "$work/x/results/$name.txt" 2>/dev/null
    if [[ $status == ok ]]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "   --- log (tail) ---"
        tail -n 40 "$work/x/results/$name.log" 2>/dev/null | sed 's/^/   /'
        echo "   --- console (tail) ---"
        tail -n 15 "$work/x/results/$name.console" 2>/dev/null | sed 's/^/   /'
    fi
}

only=${SYSTEM_SCENARIOS:-activation transcript polkit security persist upgrade purge}
for name in activation transcript polkit security; do
    [[ " $only " == *" $name "* ]] || continue
    boot "$name"
    report "$name"
done
if [[ " $only " != *" persist "* && " $only " != *" upgrade "* ]]; then
    echo "system scenarios: $passed passed, $failed failed"
    ((failed == 0))
    exit
fi
if [[ " $only " == *" persist "* ]]; then
    # 4: the state directory and homes persist across an idle exit and a reboot.
    boot persist-setup --bind="$work/state/lib:/var/lib/multipassd" --bind="$work/state/home:/home"
    report persist-setup
    boot persist-check --bind="$work/state/lib:/var/lib/multipassd" --bind="$work/state/home:/home"
    report persist-check
fi

# 5: upgrades. The packages installed here, and the same again under a later version (the
# packages repacked: what dpkg runs is the same as for a real upgrade). dpkg must write /usr, so
# the container runs over an overlay of the whole host, its changes in a tmpfs.
if [[ " $only " == *" upgrade "* ]]; then
    mkdir -p "$work/x/debs" "$work/upgrade-state"
    echo "$version" >"$work/x/debs/version"
    for p in multipass multipass-client; do
        cp "target/debian/${p}_${version}_$arch.deb" "$work/x/debs/"
        tree="$work/repack-$p"
        dpkg-deb -R "target/debian/${p}_${version}_$arch.deb" "$tree"
        sed -i "s/^Version: .*/Version: $version+1/; s/multipass-client (= $version)/multipass-client (= $version+1)/" \
            "$tree/DEBIAN/control"
        dpkg-deb -b "$tree" "$work/x/debs/${p}_$version+1_$arch.deb" >/dev/null
    done
    overlay=$work/overlay
    mkdir -p "$overlay/changes" "$overlay/root"
    mount -t tmpfs -o size=2g tmpfs "$overlay/changes"
    mkdir -p "$overlay/changes/upper" "$overlay/changes/work"
    mount -t overlay overlay \
        -o lowerdir=/,upperdir="$overlay/changes/upper",workdir="$overlay/changes/work" "$overlay/root"
    printf '#!/bin/bash\nexec /x/scenario-upgrade.sh\n' >"$work/x/run-upgrade"
    chmod +x "$work/x/run-upgrade"
    timeout 300 systemd-nspawn --register=no --keep-unit -D "$overlay/root" -q --console=pipe \
        --bind="$work/x:/x" --bind-ro=/etc:/host-etc --bind="$work/upgrade-state:/var/lib/multipassd" \
        -b systemd.firstboot=off \
        systemd.wants=dbus.socket systemd.wants=systemd-logind.service \
        systemd.wants=multipass.socket \
        systemd.run=/x/run-upgrade \
        systemd.run_success_action=poweroff systemd.run_failure_action=poweroff \
        >"$work/x/results/upgrade.console" 2>&1
    umount "$overlay/root" "$overlay/changes"
    report upgrade
fi

# 6. Purge leaves nothing of ours behind.
echo "== scenario purge"
files=$(dpkg -L multipass multipass-client | sort -u)
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q multipass multipass-client >/dev/null
remaining=()
while read -r f; do
    [[ -z $f || -d $f ]] && continue
    [[ -e $f ]] && remaining+=("$f")
done <<<"$files"
for f in /var/lib/multipassd /etc/systemd/system/sockets.target.wants/multipass.socket; do
    [[ -e $f ]] && remaining+=("$f")
done
if ((${#remaining[@]} == 0)); then
    echo "   PASS no file of the packages remains after purge (checked $(wc -l <<<"$files") paths and the state directory)"
    passed=$((passed + 1))
else
    echo "   FAIL remaining after purge: ${remaining[*]}"
    failed=$((failed + 1))
fi

echo "system scenarios: $passed passed, $failed failed"
((failed == 0))
