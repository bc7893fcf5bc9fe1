# shellcheck shell=bash
# Copy kernel modules (with their dependencies, depth first) uncompressed into
# an initramfs, and write the load order. Source it, then:
#   initramfs_add_modules KVER DESTDIR MODULE...
# writes DESTDIR/<name>.ko for each module and its dependencies, and
# DESTDIR/load-order (one name per line, insmod in that order).
initramfs_add_modules() {
  local kver=$1 dest=$2
  shift 2
  declare -A _seen=()
  local -a _order=()
  _initramfs_add_one() {
    local name=${1//-/_} dep path
    [[ -n ${_seen[$name]:-} ]] && return 0
    _seen[$name]=1
    path=$(modinfo -k "$kver" -F filename "$name" 2>/dev/null) || { echo "module $name not found for $kver" >&2; return 1; }
    [[ $path == /* ]] || return 0 # "(builtin)": nothing to load
    for dep in $(modinfo -F depends "$path" | tr ',' ' '); do _initramfs_add_one "$dep" || return 1; done
    case $path in
      *.ko) cp "$path" "$dest/$name.ko" ;;
      *.ko.xz) xz -dc "$path" >"$dest/$name.ko" ;;
      *.ko.zst) zstd -qdc "$path" >"$dest/$name.ko" ;;
      *.ko.gz) gzip -dc "$path" >"$dest/$name.ko" ;;
      *) echo "unknown module format: $path" >&2; return 1 ;;
    esac
    _order+=("$name")
  }
  mkdir -p "$dest"
  local m
  for m in "$@"; do _initramfs_add_one "$m" || return 1; done
  printf '%s\n' "${_order[@]}" >"$dest/load-order"
}
