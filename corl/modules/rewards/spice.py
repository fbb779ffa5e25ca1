"""SPICE caption metric, served by one long-lived Java process per training process.

SPICE parses captions into scene graphs with Stanford CoreNLP 3.6.0 and scores the F1 of their tuples.
pycocoevalcap ships ``spice-1.0.jar`` and its libraries but fetches the CoreNLP jars at first use, and
its ``SpiceScorer`` needs the JavaScript engine that Java 15 removed. Here a small Java server
(``java/SpiceServer.java``) loads the parser once and scores batches over stdin/stdout. Its one-time
set-up (``make spice``) is ``corl.modules.rewards.spice_setup``'s.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from corl.modules.rewards.caption_metrics import CaptionMetric
from corl.modules.rewards.spice_setup import (
    CORENLP_JARS,
    SETUP_HINT,
    cache_dir,
    main,
    problems,
    server_class,
    spice_classpath,
)


class Spice(CaptionMetric):
    """SPICE F-score ("All" tuples) of pycocoevalcap, scored by one Java process started in ``setup()``.

    Needs Java and a one-time ``make spice``. A blank candidate or reference has no tuples and scores 0,
    as SPICE would, without a round trip.

    Args:
        cache: folder with the CoreNLP jars and the compiled server (default ``$CORL_SPICE_CACHE`` or
            ``~/.cache/corl/spice``).
        java: the Java executable (name on PATH or full path).
        heap: JVM heap limit (``-Xmx``).
        threads: CoreNLP parsing threads.
        timeout_s: seconds to wait for the server to start and for each batch.
    """

    name = "spice"

    def __init__(
        self,
        cache: str | None = None,
        java: str = "java",
        heap: str = "8g",
        threads: int = 4,
        timeout_s: float = 600,
    ) -> None:
        self.cache, self.java, self.heap, self.threads, self.timeout_s = cache, java, heap, threads, timeout_s
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue | None = None
        self._log_path: Path | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """Process id of the Java server, None before ``setup()``."""
        return None if self._process is None else self._process.pid

    def missing(self) -> list[str]:
        """Java and the CoreNLP jars, where absent (``corl check``)."""
        return [f"SPICE: {problem}" for problem in problems(cache_dir(self.cache), self.java)]

    def command(self) -> list[str]:
        """The Java command line; raises with what is missing and how to fix it."""
        folder = cache_dir(self.cache)
        missing = problems(folder, self.java)
        if missing:
            raise RuntimeError("SPICE cannot start:\n  - " + "\n  - ".join(missing))
        jars = [server_class(folder).parent, *spice_classpath(), *(folder / name for name in CORENLP_JARS)]
        java = shutil.which(self.java)
        return [java, f"-Xmx{self.heap}", "-cp", os.pathsep.join(map(str, jars)), "SpiceServer", str(self.threads)]

    def setup(self) -> None:
        """Check the set-up, start the Java server and wait until its parser is loaded (once)."""
        if self._process is not None:
            return
        command = self.command()
        logs = cache_dir(self.cache) / "logs"
        logs.mkdir(exist_ok=True)
        self._log_path = logs / f"server-{os.getpid()}.log"
        with open(self._log_path, "wb") as log:  # the child keeps its own handle
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, encoding="utf-8"
            )
        self._lines = queue.Queue()
        threading.Thread(target=self._read, args=(self._process.stdout, self._lines), daemon=True).start()
        atexit.register(self.close)
        deadline = time.monotonic() + self.timeout_s
        while self._next_line(deadline, "start") != "READY":  # stdout carries nothing else, but be lenient
            pass

    @staticmethod
    def _read(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def _next_line(self, deadline: float, what: str) -> str:
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            self._process.kill()  # a late reply would answer the next request
            self.close()
            raise RuntimeError(f"SPICE server did not {what} within {self.timeout_s} s; log: {self._log_path}")
        if line is None:
            try:
                code = self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = None
            self._process = None
            message = f"SPICE server exited (code {code}) during {what}; end of {self._log_path}:\n{self._log_tail()}"
            if "edu/stanford" in message:
                message += f"\n(are the CoreNLP jars in {cache_dir(self.cache)} complete? {SETUP_HINT})"
            raise RuntimeError(message)
        return line

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _request(self, items: list[dict]) -> list[float | None]:
        with self._lock:
            if self._process is None:
                self.setup()
            try:
                self._process.stdin.write(json.dumps(items) + "\n")
                self._process.stdin.flush()
            except BrokenPipeError:
                pass  # the server died: the reader sees the end of its output and the error says why
            reply = self._next_line(time.monotonic() + self.timeout_s, "score")
        if reply.startswith("ERROR"):
            raise RuntimeError(f"SPICE server: {reply[5:].strip()} (details in {self._log_path})")
        scores = json.loads(reply)
        if len(scores) != len(items):
            raise RuntimeError(f"SPICE server answered {len(scores)} scores for {len(items)} captions")
        return scores

    def __call__(self, candidates: Sequence[str], references: Sequence[str]) -> torch.Tensor:
        """SPICE F-score per pair in [0, 1]; NaN where SPICE gives none."""
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates for {len(references)} references")
        scores = torch.zeros(len(candidates), dtype=torch.float32)
        todo = [i for i, (c, r) in enumerate(zip(candidates, references)) if c.strip() and r.strip()]
        if todo:
            replies = self._request([{"test": candidates[i], "refs": [references[i]]} for i in todo])
            for i, value in zip(todo, replies, strict=True):
                scores[i] = math.nan if value is None else float(value)
        return scores.clamp(0.0, 1.0)

    def close(self) -> None:
        """Stop the Java server (end of input, then kill after 10 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.close)
        try:
            process.stdin.close()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()

    def __getstate__(self) -> dict:
        """Copies and pickles leave the process behind and start their own."""
        return {**self.__dict__, "_process": None, "_lines": None, "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


if __name__ == "__main__":
    sys.exit(main())
