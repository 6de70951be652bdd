# Included by the Makefiles that link programs against the build tree (LIFT_BUILD, default
# .build/release) instead of an installed liblift. A program linked with -llift asks the loader
# for the SONAME, liblift.so.<major>; SwiftPM writes only liblift.so, so this adds the link
# beside it (as the top-level `make` does). Make a program depend on it with `| $(LIFT_SONAME_LINK)`.
LIFT_MAJOR := $(shell sed -n 's/^\#define LIFT_VERSION_MAJOR \([0-9][0-9]*\)$$/\1/p' $(LIFT_ROOT)/Include/lift.h)
LIFT_SONAME_LINK := $(LIFT_BUILD)/liblift.so.$(LIFT_MAJOR)

$(LIFT_SONAME_LINK): $(LIFT_BUILD)/liblift.so
	ln -sf liblift.so $@
