# SPDX-License-Identifier: MIT
# Packaging and containers (PLUGIN.md, "Installing"):
#   make deb              dovecot-sqlbox_VERSION_ARCH.deb in $(DEB_OUT), checked by lintian
#   make container-image  the Containerfile's image, built with podman on a
#                         debootstrap base (no registry needed)
#   make container-check  the container tests and the integration suite
#                         against Dovecot running in that image
# Targets that need Debian packages (lintian, podman, runc, debootstrap)
# install them with apt-get when missing; make check needs none of them.

SQLBOX_VERSION ?= 0.1.0
DEB_MAINTAINER ?= sqlbox maintainers <sqlbox@example.org>
DEB_OUT ?= $(BUILD)
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null)
DEB = $(DEB_OUT)/dovecot-sqlbox_$(SQLBOX_VERSION)_$(DEB_ARCH).deb
LINTIAN ?= lintian

# podman as Debian 12 runs it on hosts whose cgroup setup crun refuses, with
# explicit resource limits: podman's defaults may exceed what the host
# grants, and Dovecot raises its own soft limits up to these (RLIMIT_NPROC
# to the sum of its process limits).
PODMAN ?= podman --runtime runc
PODMAN_LIMITS ?= --ulimit nofile=8192:8192 --ulimit nproc=16384:16384
CONTAINER_BASE ?= localhost/debian:bookworm
CONTAINER_IMAGE ?= localhost/sqlbox-dovecot:check
CONTAINER_MODULES = $(BUILD)/container-modules

APT_INSTALL = DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
	-y -q --no-install-recommends install
# $(call need-packages,pkg ...): installs the missing ones.
need-packages = missing=; for p in $(1); do \
	[ "$$(dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null)" = installed ] || \
		missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; \
		$(APT_INSTALL) $$missing >/dev/null || exit 1; fi

.PHONY: plugins deb container-base container-image container-check

plugins: $(PLUGINS)

deb: $(PLUGINS)
	@$(call need-packages,dpkg-dev binutils)
	MAKE='$(MAKE)' packaging/build-deb.sh $(BUILD) $(DEB_OUT) \
		$(SQLBOX_VERSION) '$(DEB_MAINTAINER)'
ifneq ($(LINTIAN),)
	@$(call need-packages,lintian)
	$(LINTIAN) --fail-on error $(DEB)
endif

container-base:
	@$(call need-packages,podman runc debootstrap)
	packaging/container-base.sh $(CONTAINER_BASE)

# Dovecot's system users get the host's ids: the integration tests share
# their instance directories between host and container.
container-image: container-base
	$(PODMAN) build --format docker --network=host $(PODMAN_LIMITS) \
		--build-arg BASE=$(CONTAINER_BASE) \
		--build-arg DOVECOT_UID=$$(id -u dovecot) \
		--build-arg DOVECOT_GID=$$(id -g dovecot) \
		--build-arg DOVENULL_UID=$$(id -u dovenull) \
		--build-arg DOVENULL_GID=$$(id -g dovenull) \
		-t $(CONTAINER_IMAGE) -f Containerfile .

# The integration tests read the image's modules from $(CONTAINER_MODULES)
# (host-side doveadm and dovecot-lda load the same files the container does).
container-check: deb container-image
	@host=$$(dpkg-query -W -f='$${Version}' dovecot-core); \
	image=$$($(PODMAN) run --rm $(PODMAN_LIMITS) $(CONTAINER_IMAGE) \
		dpkg-query -W -f='$${Version}' dovecot-core); \
	[ "$$host" = "$$image" ] || { echo "dovecot-core $$host here but $$image in \
	$(CONTAINER_IMAGE): update this machine or rebuild the image"; exit 1; }
	rm -rf $(CONTAINER_MODULES) && mkdir -p $(CONTAINER_MODULES)
	@cid=$$($(PODMAN) create $(PODMAN_LIMITS) $(CONTAINER_IMAGE)) && \
	for f in lib20_sqlbox_plugin.so lib21_sqlbox_lmtp_plugin.so \
		lib95_submission_sqlbox_plugin.so \
		doveadm/lib10_doveadm_sqlbox_plugin.so; do \
		$(PODMAN) cp $$cid:$(dovecot_moduledir)/$$f $(CONTAINER_MODULES)/ || \
			{ $(PODMAN) rm $$cid >/dev/null; exit 1; }; \
	done; $(PODMAN) rm $$cid >/dev/null
	SQLBOX_PODMAN='$(PODMAN)' SQLBOX_PODMAN_RUN='$(PODMAN_LIMITS)' \
	SQLBOX_CONTAINER_IMAGE=$(CONTAINER_IMAGE) \
	SQLBOX_CONTAINER_BASE=$(CONTAINER_BASE) SQLBOX_DEB=$(abspath $(DEB)) \
		$(PYTHON) -m pytest -ra tests/container $(PYTEST_ARGS)
	SQLBOX_PODMAN='$(PODMAN)' SQLBOX_PODMAN_RUN='$(PODMAN_LIMITS)' \
	SQLBOX_CONTAINER=$(CONTAINER_IMAGE) \
	SQLBOX_BUILD=$(abspath $(CONTAINER_MODULES)) \
		$(PYTHON) -m pytest -ra tests/integration \
		--ignore=tests/integration/test_install.py $(PYTEST_ARGS)
