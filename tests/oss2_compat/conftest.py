# The oss2 compatibility suite is run by run.py against a live emulator, never by `pytest tests`.
collect_ignore_glob = ['*']
