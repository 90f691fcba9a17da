"""The operator's commands: ``console`` (console.sh) and ``oneclick`` (import.sh)."""
