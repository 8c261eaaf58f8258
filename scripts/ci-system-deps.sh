#!/usr/bin/env bash
# System packages the integration tests need: a real S3 server (Ceph radosgw) and a real browser
# (Debian's chromium). Idempotent: installs only what is missing. Never fails the build: without
# root or apt it says so and exits 0, and the tests that need these binaries skip with the reason.
set -uo pipefail

CEPH_PKGS=(ceph-mon ceph-osd ceph-mgr radosgw ceph-common)
# binary -> package that provides it
declare -A NEED=([ceph-mon]=ceph-mon [ceph-osd]=ceph-osd [ceph-mgr]=ceph-mgr [radosgw]=radosgw
                 [radosgw-admin]=radosgw [ceph]=ceph-common [monmaptool]=ceph-common
                 [ceph-authtool]=ceph-common [curl]=curl [chromium]=chromium)

missing=()
for bin in "${!NEED[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("${NEED[$bin]}")
done
[ ${#missing[@]} -eq 0 ] && { echo "ci-system-deps: radosgw and chromium already installed"; exit 0; }
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ci-system-deps: not root or no apt-get; skipping ${missing[*]} (S3/browser tests will skip)" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
lean=(); browser=()
for p in "${missing[@]}"; do
    case " ${CEPH_PKGS[*]} " in
        *" $p "*) lean+=("${CEPH_PKGS[@]}") ;;   # the Ceph set only works whole
        *) if [ "$p" = chromium ]; then browser+=("$p"); else lean+=("$p"); fi ;;
    esac
done
mapfile -t lean < <(printf '%s\n' "${lean[@]}" | sort -u | sed '/^$/d')
echo "ci-system-deps: installing ${lean[*]} ${browser[*]}"
if ! apt-get update -qq; then
    echo "ci-system-deps: apt-get update failed; S3/browser tests will skip" >&2
    exit 0
fi
status=0
[ ${#lean[@]} -gt 0 ] && { apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null || status=1; }
[ ${#browser[@]} -gt 0 ] && { apt-get install -y -qq "${browser[@]}" >/dev/null || status=1; }
[ $status -eq 0 ] || echo "ci-system-deps: apt-get install failed; S3/browser tests will skip" >&2
exit 0
