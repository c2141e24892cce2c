#!/usr/bin/env bash
# Makes sure a command exists, installing its Debian package when it does not.
#
#   scripts/need-command.sh COMMAND PACKAGE     e.g. need-command.sh wrk wrk
#
# Reuses what is already installed; otherwise runs apt-get (as root, as on
# the CI machines). Shared by the test, container and benchmark scripts.
set -euo pipefail
command=${1:?usage: need-command.sh COMMAND PACKAGE}
package=${2:?usage: need-command.sh COMMAND PACKAGE}
command -v "$command" >/dev/null 2>&1 && exit 0
# Tests run in parallel and may ask for the same package at once: one
# install at a time (apt's own lock would make the others fail, not wait),
# and whoever waited looks again before installing.
exec 9>/tmp/wasmlet-need-command.lock
flock 9
command -v "$command" >/dev/null 2>&1 && exit 0
echo "need-command: $command not found; installing $package" >&2
export DEBIAN_FRONTEND=noninteractive
# Wait for an apt run this project did not start, rather than fail.
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$package" >/dev/null
command -v "$command" >/dev/null 2>&1 || { echo "need-command: installing $package did not provide $command" >&2; exit 1; }
