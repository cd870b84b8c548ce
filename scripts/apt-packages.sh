# Sourced (not run) by ensure-browser.sh and ensure-pacs-tools.sh, which make sure a group of tests
# has the Debian packages it needs: each lists what is missing and hands it to ensure_packages.

# ensure_packages LABEL INSTALLED TESTS [PACKAGE...]
# With no PACKAGE missing, say that INSTALLED is installed. Otherwise install the PACKAGEs with
# apt-get when run as root (then call the caller's after_install function, if it defines one),
# or else say what is missing, that TESTS will skip, and how to install them. Never fails the
# caller for a missing package, not even when apt-get fails (no network, a locked dpkg, a
# package this release lacks): `make test` goes on and the tests that need one skip, naming it.
ensure_packages() {
    local label=$1 installed=$2 tests=$3
    shift 3
    if [ $# -eq 0 ]; then
        echo "$label: $installed installed"
        return 0
    fi
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "$label: installing $*"
        export DEBIAN_FRONTEND=noninteractive
        # in an `if`, so a failure neither trips the caller's `set -e` nor ends `make test`
        if apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"; then
            if declare -F after_install >/dev/null; then
                after_install
            fi
            return 0
        fi
        echo "$label: warning: apt-get could not install $*; $tests will skip." >&2
    else
        echo "$label: missing $*; $tests will skip." >&2
    fi
    # the second line lines up under the first's text
    printf '%*s install them with: sudo apt-get install %s\n' "$((${#label} + 1))" "" "$*" >&2
}
