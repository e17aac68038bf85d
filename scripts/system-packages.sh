#!/usr/bin/env bash
# The system packages the test suite needs, installed with apt when any is missing.
# `make test` and CI both run this; it does nothing when everything is present.
#
# chromium renders report.html headless (tests/test_release_report.py); openssl checks a
# release signature without edgepack (tests/test_release_signing.py).
# qemu-user runs aarch64 programs (and x86-64 ones on a CPU model without VNNI:
# tests/test_host_int8_kernels.py); the cross compilers build the native ExecuTorch
# runner and the cpuinfo probe; gcc builds the TCG plugin; xz-utils unpacks qemu's source
# for qemu-plugin.h; the arm64 architecture lets apt fetch the sysroot's packages. The
# emulated environment itself is prepared by the tests (edgepack.devices.sysroot.setup).
# dataset-fashion-mnist is the data of samples/fashion (/usr/share/datasets/fashion-mnist);
# tuxpaint-stamps-default, photographs of objects (/usr/share/tuxpaint/stamps, 160 MB
# download, 220 MB installed), is most of samples/mobilenet_v2's calibration and evaluation.
# openssh-server and -client: tests/test_ssh_runner.py starts its own sshd on 127.0.0.1 as
# an aarch64 board's stand-in; adb: the adb runner's presence checks.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
APT_PACKAGES="chromium openssl qemu-user g++-aarch64-linux-gnu gcc-aarch64-linux-gnu gcc xz-utils dataset-fashion-mnist tuxpaint-stamps-default openssh-server openssh-client adb"
if dpkg --print-foreign-architectures | grep -qx arm64 && dpkg -s $APT_PACKAGES >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo"; else
    echo "system packages missing; as root run: dpkg --add-architecture arm64 && apt-get update && apt-get install $APT_PACKAGES" >&2
    exit 1
  fi
fi
echo "installing system packages: $APT_PACKAGES"
$SUDO dpkg --add-architecture arm64
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null
