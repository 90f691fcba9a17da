#!/usr/bin/env bash
# One-click import, as OssImport's import.sh: submit, start, show progress, offer retry, report.
#   bash import.sh [--yes|--no] [job.cfg]     the job in conf/local_job.cfg (or the file given)
#   bash import.sh --demo                      a sample folder into the bundled OSS emulator
#   --keep-running                             a scripted run stops the service it started; this keeps it
#   --resume | --restart | --take-secrets      a job already submitted whose file was edited since
# Exit codes: 0 succeeded, 1 failed (or the service died), 2 refused before copying, 130 interrupted.
set -e
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/bin/bootstrap.sh"
for arg in "$@"; do
  if [ "$arg" = "--demo" ]; then
    # The emulator is its own package (an extra): the workers' bundle and the console never carry it.
    rest=()
    for a in "$@"; do [ "$a" = "--demo" ] || rest+=("$a"); done
    ossimport_bootstrap emulator
    exec "$OSSIMPORT_PY" -m oss_emulator.demo --install-dir "$HERE" ${rest[@]+"${rest[@]}"}
  fi
done
ossimport_bootstrap ""
exec "$OSSIMPORT_PY" -m ossimport_dist.cli.oneclick --install-dir "$HERE" "$@"
