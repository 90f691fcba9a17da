@echo off
rem One-click import on Windows: import.bat [--yes|--no] [job.cfg]  or  import.bat --demo
setlocal
set "HERE=%~dp0"
if not exist "%HERE%.venv\Scripts\python.exe" (
  echo Setting up the Python environment in %HERE%.venv (first run only)...
  py -3 -m venv "%HERE%.venv" || python -m venv "%HERE%.venv" || exit /b 1
  "%HERE%.venv\Scripts\python.exe" -m pip install --quiet -e "%HERE%.[emulator]" || exit /b 1
)
if "%~1"=="--demo" (
  "%HERE%.venv\Scripts\python.exe" -m oss_emulator.demo --install-dir "%HERE%."
  exit /b %ERRORLEVEL%
)
"%HERE%.venv\Scripts\python.exe" -m ossimport_dist.cli.oneclick --install-dir "%HERE%." %*
exit /b %ERRORLEVEL%
