# SPDX-License-Identifier: GPL-2.0
# Build dm-rs.ko against a Rust-enabled 6.12 tree.
#   make                   against our cached guest kernel (built on first use)
#   make KDIR=/path        against any other Rust-enabled 6.12 build tree
#   make FLAVOUR=debug     against the debug guest kernel
#   make CLIPPY=1          run clippy while compiling the Rust crate
#   make check             rustfmt and host tests (cargo)

FLAVOUR ?= release
export PATH := $(HOME)/.cargo/bin:/usr/lib/llvm-19/bin:$(PATH)
export LIBCLANG_PATH := /usr/lib/llvm-19/lib
KDIR ?= $(shell $(CURDIR)/scripts/build-kernel $(FLAVOUR))
LLVM ?= -19

all: modules

modules:
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) modules

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) clean

fmt:
	rustfmt --edition 2021 --config-path $(CURDIR)/.rustfmt.toml src/dm_rs.rs

check:
	rustfmt --edition 2021 --check --config-path $(CURDIR)/.rustfmt.toml src/dm_rs.rs
	cd persistent_data && cargo test --quiet

.PHONY: all modules clean fmt check
