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
echo "need-command: $command not found; installing $package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "$package" >/dev/null
command -v "$command" >/dev/null 2>&1 || { echo "need-command: installing $package did not provide $command" >&2; exit 1; }
