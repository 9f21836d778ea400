"""Helpers for browser tests: a fake-webcam y4m clip, a Streamlit server, headless chromium.

Recipe from ../shared/notes/stack-facts.md (outside the repo: Debian chromium driven by
Playwright, no `playwright install`).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def write_y4m(video: Path, out: Path, size: tuple[int, int] = (640, 480)) -> int:
    """Convert a video to a y4m chromium can use as its fake webcam; returns frames written."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise RuntimeError(f"{video}: cannot open")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    w, h = size
    n = 0
    with open(out, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{round(fps)}:1 Ip A1:1 C420jpeg\n".encode())
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
            fh.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
            n += 1
    cap.release()
    if n == 0:
        raise RuntimeError(f"{video}: no frames decoded")
    return n


def free_port() -> int:
    """A TCP port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def streamlit_server(
    env: dict[str, str], log_path: Path, script: str = "app.py", timeout_s: float = 90.0
) -> Iterator[str]:
    """Run `streamlit run script` in the repo root; yields its base URL; stops it afterwards."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        script,
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    log = open(log_path, "wb")  # noqa: SIM115  closed in finally
    # NOTE: own process group, so stopping it also stops anything it started.
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not become healthy; see {log_path}")
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        log.close()


# Tracebacks a server may log that are not the app's: aioice (aiortc's ICE) can fire a STUN
# retry timer for a transaction that already ended, as a connection closes ("Exception in
# callback Transaction.__retry()" ... InvalidStateError: invalid state), an upstream wart.
HARMLESS_TRACEBACKS = (re.compile(r"Transaction\.__retry.*aioice.*InvalidStateError", re.S),)


def server_tracebacks(log: str) -> tuple[list[str], list[str]]:
    """The tracebacks in a server log, each with the two lines before it (what logged it) and
    down to its exception line: (the app's, the known harmless ones)."""
    lines = log.splitlines()
    found: tuple[list[str], list[str]] = ([], [])
    for i, line in enumerate(lines):
        if "Traceback" not in line:
            continue
        end = i + 1  # the frames are indented; the exception line is the first that is not
        while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
            end += 1
        block = "\n".join(lines[max(i - 2, 0) : end + 1])
        harmless = any(pattern.search(block) for pattern in HARMLESS_TRACEBACKS)
        found[harmless].append(block)
    return found
