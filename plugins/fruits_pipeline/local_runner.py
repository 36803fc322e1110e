"""Run a rendered step with spark-submit on the worker, streaming its output into the task log."""
from __future__ import annotations

import collections
import logging
import subprocess
import time

from fruits_contract.lake import RESULT_LINE_PREFIX

log = logging.getLogger(__name__)


class LocalStepError(RuntimeError):
    """A local step exited non-zero; the message carries the end of its output."""


def run_step(command: list[str], *, name: str, env: dict | None = None, tail_lines: int = 40) -> dict:
    """Run ``command``; log each output line as it comes; return seconds and the FRUITS_RESULT dict."""
    import json

    log.info("step %s: %s", name, " ".join(command))
    started = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    result = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                          bufsize=1) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log.info("[%s] %s", name, line)
            if line.startswith(RESULT_LINE_PREFIX):
                result = json.loads(line[len(RESULT_LINE_PREFIX):])
        code = process.wait()
    seconds = round(time.monotonic() - started, 3)
    if code != 0:
        raise LocalStepError(f"step {name} failed with exit code {code} after {seconds}s; last output:\n"
                             + "\n".join(tail))
    log.info("step %s finished in %.1fs", name, seconds)
    return {"name": name, "seconds": seconds, "result": result}
