#!/usr/bin/env bash
# Make sure the web viewer's browser tests have a headless browser: Debian's chromium and its
# chromedriver (/usr/bin/chromium, /usr/bin/chromedriver), which Selenium drives without
# downloading any driver. Installs the missing Debian packages with apt-get when run as root;
# otherwise, or when apt-get fails, it only says what is missing and exits 0, and those tests
# skip, naming it. `make test` runs this.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/apt-packages.sh"

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)

ensure_packages "browser" "chromium and chromium-driver" "the web viewer's browser tests" \
    "${missing[@]}"
