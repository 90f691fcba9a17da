@echo off
rem ossimport-dist console on Windows: submit [job.cfg] | start | stop | clean [job] | stat [detail] [job] | retry [job] | errors [job] [-o file] | plan [job.cfg|job] [--json] | report [job] | verify-report [job] [--against job.cfg] | version
setlocal
set "HERE=%~dp0"
if not exist "%HERE%.venv\Scripts\python.exe" (
  echo Setting up the Python environment in %HERE%.venv (first run only)...
  py -3 -m venv "%HERE%.venv" || python -m venv "%HERE%.venv" || exit /b 1
  "%HERE%.venv\Scripts\python.exe" -m pip install --quiet -e "%HERE%." || exit /b 1
)
"%HERE%.venv\Scripts\python.exe" -m ossimport_dist --install-dir "%HERE%." %*
exit /b %ERRORLEVEL%
