# PGXS description of the Passthrough extension files, used by `make install-extension` and
# `make uninstall-extension` (see Makefile) when $(PG_CONFIG) --pgxs exists. Nothing is compiled:
# the extension is SQL only. DATA goes to $(pg_config --sharedir)/$(MODULEDIR).
#
#   make -f extension.mk PG_CONFIG=/path/to/pg_config [DESTDIR=/staging] install | uninstall

PG_CONFIG ?= pg_config
MODULEDIR  = extension
DATA       = sql/passthrough.control $(sort $(wildcard pyapp/sql/passthrough--*.sql))

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
