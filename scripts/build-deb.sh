#!/usr/bin/env bash
# Build the Debian packages into target/debian/ and check them with lintian.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for p in debhelper dpkg-dev fakeroot lintian; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg --print-architecture)
dpkg-buildpackage -b -us -uc
out=target/debian
rm -rf "$out"
mkdir -p "$out"
for f in ../multipass_"$version"_"$arch".deb ../multipass-client_"$version"_"$arch".deb \
         ../multipass_"$version"_"$arch".changes ../multipass_"$version"_"$arch".buildinfo \
         ../multipass-dbgsym_"$version"_"$arch".deb ../multipass-client-dbgsym_"$version"_"$arch".deb; do
    [[ -e $f ]] && mv -f "$f" "$out"/
done

echo "== lintian"
# --fail-on warning: no errors and no warnings, and the packages carry no lintian overrides.
lintian --fail-on error,warning --tag-display-limit 0 "$out"/multipass_"$version"_"$arch".changes
# The daemon and the helper are activated, not started, by the package, so debhelper writes no
# stop for them: the package's own prerm must (a helper left running serves on as root from the
# removed binary).
prerm=$(dpkg-deb --ctrl-tarfile "$out"/multipass_"$version"_"$arch".deb | tar -xO ./prerm)
grep -q 'deb-systemd-invoke stop multipassd-helper.service multipass.service' <<<"$prerm" ||
    { echo "the prerm does not stop the helper and the daemon" >&2; exit 1; }

ls -l "$out"
