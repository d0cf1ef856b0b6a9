# Shared helpers for dm-rs scripts. Source it; do not run it.
# shellcheck shell=bash

DMRS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BINDGEN_VERSION=0.73.2
LLVM_SUFFIX=-19
# Build products live outside the checkout so a clean clone reuses them.
DMRS_CACHE=${DMRS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dm-rs}
export PATH="$HOME/.cargo/bin:/usr/lib/llvm-19/bin:$PATH"
export LIBCLANG_PATH=/usr/lib/llvm-19/lib

log() { printf '[dm-rs] %s\n' "$*" >&2; }
die() { printf '[dm-rs] error: %s\n' "$*" >&2; exit 1; }

rust_toolchain() {
	sed -n 's/^channel *= *"\(.*\)"/\1/p' "$DMRS_ROOT/rust-toolchain.toml"
}

# The unpacked Debian linux-source-6.12 tree (read-only use; builds go to O=).
kernel_src() {
	local ver dir
	ver=$(dpkg-query -W -f='${Version}' linux-source-6.12)
	dir=$DMRS_CACHE/src/linux-source-6.12-$ver
	if [[ ! -f $dir/.complete ]]; then
		log "unpacking linux-source-6.12 $ver"
		rm -rf "$dir" "$dir.tmp"
		mkdir -p "$dir.tmp"
		tar -xJf /usr/src/linux-source-6.12.tar.xz -C "$dir.tmp" --strip-components=1
		mv "$dir.tmp" "$dir"
		touch "$dir/.complete"
	fi
	echo "$dir"
}

# Everything a kernel build depends on, hashed.
kernel_key() {
	local flavour=$1
	{
		dpkg-query -W -f='${Version}' linux-source-6.12
		cat "$DMRS_ROOT/kernel-config/base.config" "$DMRS_ROOT/kernel-config/$flavour.config"
		(cd "$DMRS_ROOT" && rustc --version)
		bindgen --version
		clang$LLVM_SUFFIX --version | head -1
		sed -n '/^# key-relevant start/,/^# key-relevant end/p' "$DMRS_ROOT/scripts/build-kernel"
	} | sha256sum | cut -c1-16
}

# Lines of a guest kernel log that fail a run; succeeds if there are any.
kernel_log_problems() {
	grep -E -A3 'BUG:|WARNING:|Oops|KASAN|general protection fault|Kernel panic|possible (recursive|circular) locking|inconsistent lock state|UBSAN|Call Trace|blocked for more than' "$1"
}

# Whether KVM works here. Some hosts expose /dev/kvm but hang in a guest, so
# probe once per host boot with a short timeout.
kvm_usable() {
	[[ -w /dev/kvm ]] || return 1
	local stamp=$DMRS_CACHE/kvm-probe-$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)
	if [[ ! -f $stamp ]]; then
		if timeout 15 qemu-system-x86_64 -accel kvm -display none -no-reboot -m 64 \
			-kernel /dev/null </dev/null >/dev/null 2>&1; then
			echo yes >"$stamp"
		else
			echo no >"$stamp"
		fi
	fi
	[[ $(cat "$stamp") == yes ]]
}
