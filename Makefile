# liblift: build, install and package.
#   make                      release build (.build/release: liblift.so, lift-file-check, lift-cli, lift-bench)
#   make install              installs under PREFIX (default /usr/local); DESTDIR stages it
#   make uninstall            removes exactly what `make install` installed (same PREFIX etc.)
#   make deb                  dist/liblift_<version>_<arch>.deb (scripts/make-deb)
#   make wheel                dist/liblift-<version>-py3-none-linux_<arch>.whl
#   make check-abi            exported symbols == lift.h's functions; versions agree
# The version has one source, the LIFT_VERSION_* macros of Include/lift.h.

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR    ?= $(PREFIX)/share
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR    ?=

version_part = $(shell sed -n 's/^\#define LIFT_VERSION_$(1) \([0-9][0-9]*\)$$/\1/p' Include/lift.h)
MAJOR   := $(call version_part,MAJOR)
VERSION := $(MAJOR).$(call version_part,MINOR).$(call version_part,PATCH)

BUILD   := .build/release
SWIFT_BUILD := swift build -c release -Xswiftc -static-stdlib

# What `make install` puts where (uninstall removes exactly these).
LIB_FILE    := $(DESTDIR)$(LIBDIR)/liblift.so.$(VERSION)
LIB_SONAME  := $(DESTDIR)$(LIBDIR)/liblift.so.$(MAJOR)
LIB_DEVLINK := $(DESTDIR)$(LIBDIR)/liblift.so
HEADER      := $(DESTDIR)$(INCLUDEDIR)/lift.h
PC_FILE     := $(DESTDIR)$(PKGCONFIGDIR)/lift.pc
CLI         := $(DESTDIR)$(BINDIR)/lift
HELPER_DIR  := $(DESTDIR)$(LIBDIR)/liblift
HELPER      := $(HELPER_DIR)/lift-file-check
SHARE       := $(DESTDIR)$(DATADIR)/liblift
ASSET       := $(SHARE)/fashion-mnist-captions.h5
INSTALLED   := $(LIB_FILE) $(LIB_SONAME) $(LIB_DEVLINK) $(HEADER) $(PC_FILE) $(CLI) $(ASSET) $(HELPER)

all: build

# The build tree gets liblift.so.<major> too: programs linked against it ask for the SONAME.
build:
	$(SWIFT_BUILD)
	ln -sf liblift.so $(BUILD)/liblift.so.$(MAJOR)

install: build
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(BINDIR) $(SHARE) $(HELPER_DIR)
	install -m 0755 $(BUILD)/liblift.so $(LIB_FILE)
	@# lift_file_check's checking process: found in the liblift/ folder beside the library.
	install -m 0755 $(BUILD)/lift-file-check $(HELPER)
	ln -sfn liblift.so.$(VERSION) $(LIB_SONAME)
	ln -sfn liblift.so.$(MAJOR) $(LIB_DEVLINK)
	install -m 0644 Include/lift.h $(HEADER)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' packaging/lift.pc.in > $(PC_FILE)
	chmod 0644 $(PC_FILE)
	install -m 0755 $(BUILD)/lift-cli $(CLI)
	install -m 0644 assets/fashion-mnist-captions.h5 $(ASSET)
	@# A live install into a system folder: refresh the loader's cache so liblift.so.$(MAJOR) is found.
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig > /dev/null; then ldconfig; fi
	@echo "installed liblift $(VERSION) under $(DESTDIR)$(PREFIX)"

uninstall:
	rm -f $(INSTALLED)
	-rmdir $(SHARE) $(HELPER_DIR) 2> /dev/null
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig > /dev/null; then ldconfig; fi
	@echo "removed liblift $(VERSION) from $(DESTDIR)$(PREFIX)"

deb: build
	scripts/make-deb

wheel: build
	rm -rf bindings/python/build
	LIBLIFT_PATH=$(abspath $(BUILD)/liblift.so) python3 -m pip wheel --no-deps -q -w dist ./bindings/python
	@ls dist/liblift-$(VERSION)-*.whl

check-abi: build
	python3 scripts/check-abi $(BUILD)/liblift.so

version:
	@echo $(VERSION)

.PHONY: all build install uninstall deb wheel check-abi version
