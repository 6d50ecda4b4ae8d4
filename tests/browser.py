"""A real headless browser for the status page tests: Debian's Chromium,
driven by Playwright (its own browser download is not used)."""

import os
import shutil
import subprocess

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This machine's network is closed: Chromium's background connections
    # would only fail, many at a time.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ensure_chromium():
    """The path of a Chromium, installing Debian's package when there is
    none and this is a root shell with apt.

    @return: the path, or None with the reason as the second value.
    """
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path, None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "no chromium, and no root apt-get to install Debian's package"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            return None, "installing chromium failed: {}".format(result.stderr.strip()[-300:])
    path = shutil.which("chromium")
    return (path, None) if path else (None, "chromium installed but not on PATH")
