#!/usr/bin/env bash
# Make sure the web viewer's browser tests have a headless browser: Debian's chromium and its
# chromedriver (/usr/bin/chromium, /usr/bin/chromedriver), which Selenium drives without
# downloading any driver. Installs the missing Debian packages with apt-get when run as root;
# otherwise it only says what is missing, and those tests skip, naming it. `make test` runs this.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)

if [ ${#missing[@]} -eq 0 ]; then
    echo "browser: chromium and chromium-driver installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "browser: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    exit 0
fi

echo "browser: missing ${missing[*]}; the web viewer's browser tests will skip." >&2
echo "         install them with: sudo apt-get install ${missing[*]}" >&2
exit 0
