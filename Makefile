# The two README commands: `make run` and `make test`. Both are idempotent and quick the
# second time (stamps in .venv/ record what was installed).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEBS := scripts/install-debs.sh

# To build libvirt-python and run the panel.
RUN_DEBS := pkg-config libvirt-dev gcc python3-dev python3-venv libvirt-clients python3-libnbd libnbd-bin
# What the tests run for real: libvirtd + QEMU (TCG guests), guest building, browser, desktop.
TEST_DEBS := libvirt-daemon-system libvirt-daemon libvirt-daemon-driver-qemu \
	qemu-system-x86 qemu-utils dnsmasq-base iptables busybox-static cpio lvm2 \
	nfs-ganesha nfs-ganesha-vfs libnfs-utils \
	ceph-mon ceph-osd ceph-mgr ceph-common python3-rbd python3-rados \
	libvirt-daemon-driver-storage-rbd qemu-block-extra openssh-server netcat-openbsd \
	xvfb xauth imagemagick chromium fonts-dejavu-core libxml2-utils \
	libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
	libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0 libxcb-randr0 libxcb-xinerama0 \
	libnss3 libegl1 libgl1 libxkbfile1 libxcomposite1 libxdamage1 libxrandr2 libxtst6 \
	mmdebstrap grub-pc-bin fdisk dropbear-bin isolinux syslinux-common python3-openssl

HOST ?= 127.0.0.1
PORT ?= 8080
PYTEST_ARGS ?=

.PHONY: run test test-fast bench lint services services-stop deps test-deps clean

$(VENV)/.deps: setup.py pyproject.toml
	$(DEBS) $(RUN_DEBS)
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test-deps: $(VENV)/.deps
	$(DEBS) $(TEST_DEBS)
	$(PY) -m pip install -q -e '.[test,desktop]'
	touch $@

deps: $(VENV)/.deps
test-deps: $(VENV)/.test-deps

run: deps
	$(PY) app.py serve --host $(HOST) --port $(PORT)

services: test-deps
	scripts/services/libvirtd.sh start

# Stop what `make services` / `make test` started (libvirtd, virtlogd); tests stop their own
# helper daemons themselves.
services-stop:
	scripts/services/libvirtd.sh stop

lint: test-deps
	$(PY) -m ruff check .

test: services lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast subset while working: no real guests, browser or desktop window.
test-fast: test-deps
	$(PY) -m pytest -m "not slow and not browser and not desktop" $(PYTEST_ARGS)

# Fails when `python -m bench` does: exit 2 when a benchmark could not run (an ERROR row),
# 1 for a missed goal with BENCH_ARGS=--strict. BENCH_ARGS: e.g. --only vm_list --keep.
bench: services
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache build *.egg-info
