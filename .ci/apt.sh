# Sourced by .ci/run and .ci/redis.sh (bash): install Debian/Ubuntu packages with apt-get.
#
#     cw_apt_install PACKAGE...
#
# Runs apt-get as root, or through sudo when not root (passwordless only: CI cannot type a
# password), and waits up to 5 minutes for a dpkg lock held by another apt (a fresh machine
# often runs its own updates at boot). Returns non-zero, after saying why, when it cannot
# install; it never exits the shell that sourced it, nor changes its options.

cw_apt_install() {
    local sudo=""
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "apt.sh: cannot install $*: apt-get not found; install them with this system's package manager" >&2
        return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
            echo "apt.sh: cannot install $*: not root, and sudo needs a password (or is missing); install them as root" >&2
            return 1
        fi
        sudo="sudo"
    fi
    echo "apt.sh: installing $*" >&2
    # `env` passes DEBIAN_FRONTEND through sudo (which would drop it from the environment).
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
            install -y -qq "$@" >/dev/null
}
