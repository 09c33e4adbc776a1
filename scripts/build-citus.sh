#!/usr/bin/env bash
# Build Citus from a source folder and install it into the system PostgreSQL 15.
#
#   scripts/build-citus.sh SRC      (SRC: citusdata/citus at tag v13.2.2, unpacked)
#
# Installs the build dependencies that are missing (installing postgresql-server-dev-15
# upgrades the system PostgreSQL 15 in place: restart servers running the old binaries),
# removes Citus's own static have_createdb_privilege() when PostgreSQL's headers already
# export one (15.20 does: the two clash), then configures, builds and installs.
# Environment: PG_CONFIG (default /usr/lib/postgresql/15/bin/pg_config), JOBS (default 2).
set -euo pipefail

src=${1:?usage: scripts/build-citus.sh SRC (a citusdata/citus v13.2.2 source folder)}
src=$(cd "$src" && pwd)
pg_config=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
jobs=${JOBS:-2}
[ -f "$src/src/include/pg_version_compat.h" ] || { echo "build-citus: $src is not a Citus source folder" >&2; exit 2; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

missing=()
for package in postgresql-server-dev-15 liblz4-dev libzstd-dev libkrb5-dev; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "build-citus: installing ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
        || { $sudo apt-get update && $sudo env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

# Later 15.x releases (15.20) export have_createdb_privilege(); Citus 13.2.2 still
# defines a static one for PG < 16, and the two declarations clash.
compat="$src/src/include/pg_version_compat.h"
if grep -rqs --include='*.h' 'have_createdb_privilege' "$("$pg_config" --includedir-server)" \
        && grep -q '^have_createdb_privilege(void)' "$compat"; then
    echo "build-citus: removing the static have_createdb_privilege() from $compat"
    perl -0pi -e 's/static inline bool\nhave_createdb_privilege\(void\)\n\{.*?\n\}\n//s' "$compat"
    if grep -q '^have_createdb_privilege(void)' "$compat"; then
        echo "build-citus: could not remove have_createdb_privilege() from $compat" >&2; exit 1
    fi
fi

cd "$src"
./configure PG_CONFIG="$pg_config" --without-libcurl
make -j"$jobs"
$sudo make install
echo "build-citus: installed $(grep -h default_version "$("$pg_config" --sharedir)/extension/citus.control")"
