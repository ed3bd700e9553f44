# shellcheck shell=bash
# Shared helpers for Accordion's scripts: logging, host tool installation, a private apt
# state for fetching Debian packages without installing them, and a cached builder for
# "kernel + busybox initramfs" boot images (used for the test guest and the test host).
#
# Source it from a script that has `set -euo pipefail` and sets LOG_TAG.

ACCORDION_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ACCORDION_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/accordion
DEBIAN_MIRROR=${ACCORDION_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${ACCORDION_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DEBIAN_RELEASE=bookworm
# The private apt lists are refreshed when older than this, so a new Debian kernel is
# picked up eventually without making every cached run touch the network.
APT_MAX_AGE_S=${ACCORDION_APT_MAX_AGE_S:-86400}

log() { echo "${LOG_TAG:-accordion}: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The system interpreter, not a version-manager shim that may be first in PATH.
python() {
  if [ -x /usr/bin/python3 ]; then /usr/bin/python3 "$@"; else python3 "$@"; fi
}

# ---------------------------------------------------------------------------- host tools

HOST_APT_UPDATED=0

# missing_pkgs CMD:PACKAGE... — print the packages of the commands that are not found.
missing_pkgs() {
  local spec
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null 2>&1 || echo "${spec#*:}"
  done
}

# apt_install_host APT_ARGS... — install on the host, never removing anything: on
# Accordion's machines some packages come from backports (qemu-utils 10), and installing
# bookworm's version of a sibling package would silently remove them.
apt_install_host() {
  [ "$(id -u)" -eq 0 ] || die "need root to apt-get install $*"
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --no-remove "$@" >&2
}

# ensure_host_cmds CMD:PACKAGE... — install the Debian package of each missing command,
# from the host's own apt sources. apt-get update runs at most once per process, and only
# if something is missing.
ensure_host_cmds() {
  local missing
  mapfile -t missing < <(missing_pkgs "$@")
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$HOST_APT_UPDATED" -eq 0 ]; then
    log "apt-get update (to install ${missing[*]})"
    # A third-party source that is unreachable makes update fail while Debian's own
    # lists are fine; the install below is the real check.
    apt-get update -q >&2 || log "warning: apt-get update reported errors, trying the install anyway"
    HOST_APT_UPDATED=1
  fi
  apt_install_host "${missing[@]}" || die "could not install ${missing[*]}"
}

# ensure_qemu — qemu-system-x86_64 from bookworm-backports (QEMU 10), the series of the
# qemu-utils these machines come with; bookworm's QEMU 7.2 conflicts with that.
ensure_qemu() {
  command -v qemu-system-x86_64 >/dev/null 2>&1 && return 0
  apt_private_init
  apt_install_host "${APT_OPTS[@]}" -t "$DEBIAN_RELEASE-backports" qemu-system-x86 \
    || die "could not install qemu-system-x86 from $DEBIAN_RELEASE-backports"
}

# ---------------------------------------------------------------------------- private apt

APT_DIR=$ACCORDION_CACHE/apt
APT_OPTS=(
  -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
  -o "Dir::Etc::SourceParts=$APT_DIR/empty.d"
  -o "Dir::Etc::PreferencesParts=$APT_DIR/empty.d"
  -o "Dir::State::Lists=$APT_DIR/lists"
  -o "Dir::Cache=$APT_DIR/cache"
  # Keep apt's binary cache (Docker images switch it off) so look-ups take ~0.1 s.
  -o "Dir::Cache::pkgcache=pkgcache.bin"
  -o "Dir::Cache::srcpkgcache=srcpkgcache.bin"
  # Only the Packages indexes are needed, not AppStream metadata and such.
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
  -o "APT::Sandbox::User=root"
  -o "Debug::NoLocking=1"
)

# A private apt state (own sources incl. backports, own lists) so that nothing on the
# host changes: packages are only downloaded and unpacked, never installed.
apt_private_init() {
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg signed=
  [ -r "$keyring" ] && signed="[signed-by=$keyring] "
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/empty.d"
  cat > "$APT_DIR/sources.list.new" <<EOF
deb ${signed}$DEBIAN_MIRROR $DEBIAN_RELEASE main
deb ${signed}$DEBIAN_MIRROR $DEBIAN_RELEASE-updates main
deb ${signed}$DEBIAN_MIRROR $DEBIAN_RELEASE-backports main
deb ${signed}$DEBIAN_SECURITY_MIRROR $DEBIAN_RELEASE-security main
EOF
  if ! cmp -s "$APT_DIR/sources.list.new" "$APT_DIR/sources.list"; then
    mv "$APT_DIR/sources.list.new" "$APT_DIR/sources.list"
    rm -f "$APT_DIR/updated"
  else
    rm -f "$APT_DIR/sources.list.new"
  fi
  local stamp=$APT_DIR/updated age
  if [ -e "$stamp" ]; then
    age=$(( $(date +%s) - $(stat -c %Y "$stamp") ))
    [ "$age" -lt "$APT_MAX_AGE_S" ] && [ "${ACCORDION_APT_REFRESH:-0}" != 1 ] && return 0
  fi
  log "refreshing private apt lists ($DEBIAN_RELEASE, -updates, -backports, -security)"
  if apt-get "${APT_OPTS[@]}" -q update >&2; then
    touch "$stamp"
  elif [ -e "$stamp" ]; then
    log "warning: apt list refresh failed, using the lists from $(date -r "$stamp")"
  else
    die "apt-get update with the private lists failed (is $DEBIAN_MIRROR reachable?)"
  fi
}

# apt_version PKG [SUITE] — the newest version of PKG in SUITE (default: the candidate
# of the default suites; backports is never the candidate because it is NotAutomatic).
apt_version() {
  local pkg=$1 suite=${2:-} ver
  if [ -n "$suite" ]; then
    ver=$(apt-cache "${APT_OPTS[@]}" madison "$pkg" \
      | awk -F' [|] ' -v s=" $suite/" 'index($3, s) { gsub(/ /, "", $2); print $2; exit }')
  else
    ver=$(apt-cache "${APT_OPTS[@]}" policy "$pkg" | awk '/Candidate:/ { print $2; exit }')
  fi
  if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
    die "package $pkg not found${suite:+ in $suite}"
  fi
  echo "$ver"
}

# apt_resolve_kernel META SUITE — a kernel meta package (linux-image-cloud-amd64) names
# the concrete image package in an exact-version Depends; print "package=version".
apt_resolve_kernel() {
  local meta=$1 suite=$2 ver dep
  ver=$(apt_version "$meta" "$suite")
  dep=$(apt-cache "${APT_OPTS[@]}" show "$meta=$ver" \
    | awk '/^Depends:/ { sub(/^Depends: */, ""); print; exit }' | tr ',' '\n' \
    | sed -n 's/^ *\(linux-image-[0-9][^ ]*\) *(= *\([^)]*\)).*/\1=\2/p' | head -n1)
  if [ -n "$dep" ]; then echo "$dep"; else echo "$meta=$ver"; fi
}

# deb_fetch PKG=VERSION — download the .deb into the cache (once); print its path.
deb_fetch() {
  local spec=$1 pkg ver dir=$ACCORDION_CACHE/debs f
  pkg=${spec%%=*} ver=${spec#*=}
  mkdir -p "$dir"
  # apt names files pkg_version_arch.deb with ':' in the version escaped as %3a.
  for f in "$dir/${pkg}_${ver//:/%3a}_"*.deb; do
    [ -s "$f" ] && { touch "$f"; echo "$f"; return 0; }
  done
  log "downloading $spec"
  (cd "$dir" && apt-get "${APT_OPTS[@]}" -q download "$spec" >&2) || die "download of $spec failed"
  for f in "$dir/${pkg}_${ver//:/%3a}_"*.deb; do
    [ -s "$f" ] && { echo "$f"; return 0; }
  done
  die "downloaded $spec but cannot find the .deb in $dir"
}

# deb_unpack DEB — unpack once into the cache (dpkg-deb -x, no install); print the dir.
deb_unpack() {
  local deb=$1 dir
  dir=$ACCORDION_CACHE/unpacked/$(basename "$deb" .deb)
  if [ ! -e "$dir/.complete" ]; then
    log "unpacking $(basename "$deb")"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    dpkg-deb -x "$deb" "$dir.tmp"
    touch "$dir.tmp/.complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  touch "$dir"
  echo "$dir"
}

# ---------------------------------------------------------------------------- boot images

# build_boot_image — a kernel from a Debian package plus an initramfs of static busybox,
# the listed modules (with their dependencies, built-ins skipped) and an /init script.
# Inputs are globals, because there are several and bash has no named arguments:
#   IMG_KIND      cache subdirectory: guest, test-host
#   IMG_KERNEL    kernel meta package, e.g. linux-image-cloud-amd64
#   IMG_SUITE     suite it comes from, e.g. bookworm-backports
#   IMG_INIT      the /init script file
#   IMG_MODULES   modules /init loads, space separated
#   IMG_VMLINUX   1 to also extract the ELF vmlinux (and require the PVH note)
#   IMG_CMDLINE   default kernel command line, written to the `cmdline` file
#   IMG_INPUTS    further files whose content goes into the cache key (the calling script)
# Output: IMG_DIR, the cached directory $ACCORDION_CACHE/$IMG_KIND/<key>; the symlink
# $ACCORDION_CACHE/$IMG_KIND/current points to it.
build_boot_image() {
  ensure_host_cmds apt-get:apt dpkg-deb:dpkg zstd:zstd
  apt_private_init
  local kspec bbspec kdeb bbdeb key kroot bbroot kver stage tmp
  kspec=$(apt_resolve_kernel "$IMG_KERNEL" "$IMG_SUITE")
  bbspec=busybox-static=$(apt_version busybox-static)

  # The key: what goes in (package versions, configuration) and what builds it (the
  # content of the builder files), so any change there gives a new directory.
  key=$( {
    printf 'kernel=%s\nbusybox=%s\nmodules=%s\nvmlinux=%s\ncmdline=%s\n' \
      "$kspec" "$bbspec" "$IMG_MODULES" "$IMG_VMLINUX" "$IMG_CMDLINE"
    cat "$ACCORDION_LIB_DIR/common.sh" "$ACCORDION_LIB_DIR/kimage.py" "$IMG_INIT" ${IMG_INPUTS:+$IMG_INPUTS}
  } | sha256sum | cut -c1-16)
  # Readable prefix: the kernel release, e.g. 6.12.38+deb12-cloud-amd64.
  IMG_DIR=$ACCORDION_CACHE/$IMG_KIND/${kspec%%=*}-$key
  IMG_DIR=${IMG_DIR/linux-image-/}
  if [ -e "$IMG_DIR/info.txt" ]; then
    log "cached: $IMG_DIR"
    touch "$IMG_DIR"  # its mtime says when it was last used (see prune_cache)
    link_current "$IMG_DIR"
    prune_cache
    return 0
  fi

  log "building $IMG_KIND image: $kspec, $bbspec, modules: $IMG_MODULES"
  kdeb=$(deb_fetch "$kspec")
  bbdeb=$(deb_fetch "$bbspec")
  kroot=$(deb_unpack "$kdeb")
  bbroot=$(deb_unpack "$bbdeb")
  kver=$(find "$kroot/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -n1)
  [ -f "$kroot/boot/vmlinuz-$kver" ] || die "no kernel found in $kdeb"

  # Build in a temporary directory next to the final one and rename it at the end, so a
  # cache directory is always complete and concurrent builds do not see half a build.
  mkdir -p "$ACCORDION_CACHE/$IMG_KIND"
  tmp=$(mktemp -d "$ACCORDION_CACHE/$IMG_KIND/.build.XXXXXX")
  stage=$tmp/.root
  mkdir -p "$stage/bin" "$stage/etc" "$stage/lib/modules"
  install -m 0755 "$bbroot/bin/busybox" "$stage/bin/busybox"
  ln -s busybox "$stage/bin/sh"
  install -m 0755 "$IMG_INIT" "$stage/init"
  cp "$kroot/boot/vmlinuz-$kver" "$tmp/bzImage"
  cp "$kroot/boot/config-$kver" "$tmp/config"

  local order
  # shellcheck disable=SC2086  # IMG_MODULES is a word list
  order=$(python "$ACCORDION_LIB_DIR/kimage.py" modules \
    --modroot "$kroot/lib/modules/$kver" --dest "$stage" $IMG_MODULES)
  python "$ACCORDION_LIB_DIR/kimage.py" cpio --root "$stage" --out "$tmp/initramfs.cpio.gz" \
    --dev dev/console:c:5:1:0600 --dev dev/null:c:1:3:0666 \
    --dir dev --dir proc --dir sys --dir tmp --dir run
  rm -rf "$stage"

  local vmlinux_info=
  if [ "$IMG_VMLINUX" = 1 ]; then
    vmlinux_info=$(python "$ACCORDION_LIB_DIR/kimage.py" vmlinux --require-pvh \
      --bzimage "$tmp/bzImage" --out "$tmp/vmlinux")
  fi
  [ -n "$IMG_CMDLINE" ] && echo "$IMG_CMDLINE" > "$tmp/cmdline"
  {
    echo "key=$key"
    echo "kernel_package=$kspec"
    echo "kernel_release=$kver"
    echo "busybox_package=$bbspec"
    echo "modules_loaded=$(echo "$order" | tr '\n' ' ' | sed 's/ $//')"
    [ -n "$vmlinux_info" ] && echo "$vmlinux_info"
    [ -n "$IMG_CMDLINE" ] && echo "cmdline=$IMG_CMDLINE"
    echo "bzImage_bytes=$(stat -c %s "$tmp/bzImage")"
    echo "initramfs_bytes=$(stat -c %s "$tmp/initramfs.cpio.gz")"
  } > "$tmp/info.txt"
  chmod 0755 "$tmp"
  if ! mv -T "$tmp" "$IMG_DIR" 2>/dev/null; then
    # Someone else finished the same build first; theirs is identical.
    rm -rf "$tmp"
  fi
  log "built: $IMG_DIR"
  link_current "$IMG_DIR"
  prune_cache
}

# prune_cache — every changed input makes a new image directory (~70 MB for the guest);
# drop images, unpacked trees and .debs unused for ACCORDION_CACHE_KEEP_DAYS (default 14).
# `current` and what it points to are never removed.
prune_cache() {
  local days=${ACCORDION_CACHE_KEEP_DAYS:-14} dir old
  for dir in "$ACCORDION_CACHE/$IMG_KIND" "$ACCORDION_CACHE/unpacked" "$ACCORDION_CACHE/debs"; do
    [ -d "$dir" ] || continue
    while IFS= read -r old; do
      [ "$old" = "$(readlink -f "$dir/current" 2>/dev/null)" ] && continue
      log "pruning $old (unused for $days days)"
      rm -rf "$old"
    done < <(find "$dir" -mindepth 1 -maxdepth 1 ! -name current ! -name '.*' -mtime "+$days")
  done
  # Leftovers of builds that failed or were interrupted.
  find "$ACCORDION_CACHE/$IMG_KIND" "$ACCORDION_CACHE/unpacked" -mindepth 1 -maxdepth 1 \
    \( -name '.build.*' -o -name '*.tmp' \) -mtime +0 -exec rm -rf {} + 2>/dev/null || true
}

# link_current DIR — point the `current` symlink beside DIR at it (atomically).
link_current() {
  local dir=$1 parent
  parent=$(dirname "$dir")
  ln -sfn "$(basename "$dir")" "$parent/.current.$$"
  mv -T "$parent/.current.$$" "$parent/current"
}
