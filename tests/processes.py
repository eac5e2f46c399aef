"""Stopping the test servers that run as child processes (node PDS, moto)."""

import subprocess


def stop_child(process: subprocess.Popen) -> None:
    """Closing stdin asks the child to exit (both servers watch it); kill it if it does not."""
    if process.poll() is not None:
        return
    if process.stdin:
        process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
