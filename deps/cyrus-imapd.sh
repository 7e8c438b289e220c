#!/bin/sh
# Cyrus's imapd for the tests, unpacked from Debian's cyrus-imapd into DIR (default .venv/cyrus)
# without installing it: that package conflicts with dovecot-imapd (both provide imap-server),
# which the tests need too. cyrus-common (deps/debian-test.txt) has master and the libraries.
set -e
dir=${1:-.venv/cyrus}
[ -x "$dir/usr/lib/cyrus/bin/imapd" ] && exit 0
version=$(dpkg-query -W -f='${Version}' cyrus-common)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
echo "unpacking cyrus-imapd $version into $dir"
(cd "$tmp" && apt-get download -q "cyrus-imapd=$version" >/dev/null 2>&1) || {
    echo "cannot download cyrus-imapd $version (apt-get download); run apt-get update and try again" >&2
    exit 1
}
mkdir -p "$dir"
dpkg-deb -x "$tmp"/cyrus-imapd_*.deb "$dir"
