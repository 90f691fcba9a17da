#!/usr/bin/env bash
# ossimport-dist console: submit [job.cfg] | start | stop | clean [job] | stat [detail] [job] [--json]
#   | retry [job] | errors [job] [-o file] | set key=value|credentialKey [--from job.cfg] [job]
#   | plan [job.cfg|job] [--json] | report [job] | verify-report [job] [--against job.cfg] | version
set -e
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/bin/bootstrap.sh"
ossimport_bootstrap ""
exec "$OSSIMPORT_PY" -m ossimport_dist --install-dir "$HERE" "$@"
