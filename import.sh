#!/usr/bin/env bash
# One-click import, as OssImport's import.sh: submit, start, show progress, offer retry, report.
#   bash import.sh [--yes|--no] [job.cfg]     the job in conf/local_job.cfg (or the file given)
#   bash import.sh --demo                      a sample folder into the bundled OSS emulator
set -e
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/bin/bootstrap.sh"
ossimport_bootstrap ""
exec "$OSSIMPORT_PY" -m ossimport_dist.oneclick --install-dir "$HERE" "$@"
