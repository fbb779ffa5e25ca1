"""SPICE caption metric, served by one long-lived Java process per training process.

SPICE parses captions into scene graphs with Stanford CoreNLP 3.6.0 and scores the F1 of their tuples.
pycocoevalcap ships ``spice-1.0.jar`` and its libraries but fetches the CoreNLP jars at first use, and
its ``SpiceScorer`` needs the JavaScript engine that Java 15 removed. Here a small Java server
(``java/SpiceServer.java``) loads the parser once and scores batches over stdin/stdout.

Set-up, once per machine (downloads about 370 MB from Maven Central, checked against its SHA-1 files,
and compiles the server)::

    make spice        # or: python -m corl.modules.rewards.spice setup [--cache DIR]
    python -m corl.modules.rewards.spice check

The cache folder is ``--cache``, else ``$CORL_SPICE_CACHE``, else ``~/.cache/corl/spice``. Without
internet, copy ``stanford-corenlp-3.6.0.jar`` and ``stanford-corenlp-3.6.0-models.jar`` into it by hand
and run ``setup`` to compile the server.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import importlib.util
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from corl.modules.rewards.caption_metrics import CaptionMetric

MAVEN = "https://repo1.maven.org/maven2/edu/stanford/nlp/stanford-corenlp/3.6.0/"
# jar name -> an entry it must contain
CORENLP_JARS = {
    "stanford-corenlp-3.6.0.jar": "edu/stanford/nlp/pipeline/StanfordCoreNLP.class",
    "stanford-corenlp-3.6.0-models.jar": "edu/stanford/nlp/models/lexparser/englishPCFG.ser.gz",
}
SERVER_SOURCE = Path(__file__).parent / "java" / "SpiceServer.java"
SETUP_HINT = "run `make spice` or `python -m corl.modules.rewards.spice setup`"
Log = Callable[[str], object]
JAVA_HINT = "install Java 8+ (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set `java` to its path"


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache``, else ``$CORL_SPICE_CACHE``, else ``~/.cache/corl/spice``."""
    return Path(cache or os.environ.get("CORL_SPICE_CACHE") or "~/.cache/corl/spice").expanduser()


def spice_home() -> Path:
    """The ``spice/`` folder of pycocoevalcap, which holds ``spice-1.0.jar`` and ``lib/``."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pycocoevalcap is not installed (it ships spice-1.0.jar): pip install pycocoevalcap")
    return Path(next(iter(spec.submodule_search_locations))) / "spice"


def server_class(cache: Path) -> Path:
    """Where ``setup`` puts the compiled server."""
    return cache / "classes" / "SpiceServer.class"


def jar_problem(path: Path, entry: str) -> str | None:
    """Why ``path`` is not a usable jar (missing, not a zip, lacks ``entry``), or None."""
    if not path.is_file():
        return "missing"
    try:
        with zipfile.ZipFile(path) as jar:
            jar.getinfo(entry)
    except zipfile.BadZipFile:
        return "not a jar (zip) file"
    except KeyError:
        return f"has no {entry}"
    return None


def spice_classpath() -> list[Path]:
    """spice-1.0.jar and its libraries (enough to compile the server)."""
    home = spice_home()
    return [home / "spice-1.0.jar", *sorted((home / "lib").glob("*.jar"))]


def server_is_current(cache: Path) -> bool:
    """Whether the compiled server exists and is newer than its source."""
    compiled = server_class(cache)
    return compiled.is_file() and compiled.stat().st_mtime >= SERVER_SOURCE.stat().st_mtime


def inventory(cache: Path, java: str = "java") -> list[tuple[str, str | None]]:
    """``(item, problem and its fix, or None)`` for everything the server needs."""
    found = shutil.which(java)
    items = [(f"Java runtime: {found or java}", None if found else f"not found on PATH: {JAVA_HINT}")]
    try:
        jar = spice_home() / "spice-1.0.jar"
        items.append((f"SPICE: {jar}", None if jar.is_file() else "missing: reinstall pycocoevalcap"))
    except FileNotFoundError as error:
        items.append(("SPICE: spice-1.0.jar", str(error)))
    for name, entry in CORENLP_JARS.items():
        problem = jar_problem(cache / name, entry)
        items.append((f"CoreNLP: {cache / name}", problem and f"{problem}: {SETUP_HINT} (or copy it there by hand)"))
    compiled = server_class(cache)
    problem = None
    if not compiled.is_file():
        problem = f"missing: {SETUP_HINT}"
    elif not server_is_current(cache):
        problem = f"older than {SERVER_SOURCE}: {SETUP_HINT}"
    items.append((f"compiled SPICE server: {compiled}", problem))
    return items


def problems(cache: Path, java: str = "java") -> list[str]:
    """What is missing to run the server, each with how to fix it; empty when all is there."""
    return [f"{item} {problem}" for item, problem in inventory(cache, java) if problem]


def _fetch_sha1(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        text = response.read().decode("ascii", "replace").split()
    digest = text[0].lower() if text else ""
    if len(digest) != 40 or any(c not in "0123456789abcdef" for c in digest):
        raise RuntimeError(f"{url} does not hold a SHA-1 digest")
    return digest


def download_jar(name: str, cache: Path, log: Log = print) -> Path:
    """Download ``name`` from Maven Central into ``cache``, checked against its ``.sha1`` and its content.

    Nothing is left behind when the download or a check fails.
    """
    url, target = MAVEN + name, cache / name
    part = target.with_name(name + ".part")
    source = url + ".sha1"
    try:
        expected = _fetch_sha1(source)
        source = url
        log(f"downloading {url}")
        digest = hashlib.sha1()
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            raise RuntimeError(f"SHA-1 of {url} is {digest.hexdigest()}, Maven Central publishes {expected}")
        problem = jar_problem(part, CORENLP_JARS[name])
        if problem:
            raise RuntimeError(f"{url} {problem}")
        os.replace(part, target)
    except OSError as error:  # urllib's errors included
        raise RuntimeError(
            f"could not download {source}: {error}. Without internet, copy {' and '.join(CORENLP_JARS)} into "
            f"{cache} by hand (from {MAVEN}, or from CoreNLP's stanford-corenlp-full-2015-12-09.zip) "
            "and run setup again"
        ) from error
    finally:
        part.unlink(missing_ok=True)
    log(f"{target}: SHA-1 {expected} ok")
    return target


def compile_server(cache: Path, javac: str = "javac") -> Path:
    """Compile ``SpiceServer.java`` against spice-1.0.jar and its libraries into ``cache/classes``."""
    if shutil.which(javac) is None:
        raise FileNotFoundError(
            f"Java compiler `{javac}` not found on PATH: install a JDK no newer than the Java that runs it "
            "(Debian/Ubuntu: apt-get install openjdk-17-jdk-headless)"
        )
    classes = server_class(cache).parent
    classes.mkdir(parents=True, exist_ok=True)
    classpath = os.pathsep.join(map(str, spice_classpath()))
    command = [javac, "-encoding", "UTF-8", "-d", str(classes), "-cp", classpath, str(SERVER_SOURCE)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"javac failed on {SERVER_SOURCE}:\n{result.stdout}{result.stderr}")
    return server_class(cache)


def setup_spice(
    cache: str | os.PathLike | None = None, javac: str = "javac", log: Log = print
) -> Path:
    """Compile the server and fetch the CoreNLP jars into the cache folder; skip what is already valid."""
    folder = cache_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    if server_is_current(folder):
        log(f"{server_class(folder)}: up to date")
    else:
        log(f"compiled {compile_server(folder, javac)}")
    for name, entry in CORENLP_JARS.items():
        if jar_problem(folder / name, entry) is None:
            log(f"{folder / name}: present")
        else:
            download_jar(name, folder, log)
    return folder


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


def main(argv: Sequence[str] | None = None) -> int:
    """``setup`` fetches the CoreNLP jars and compiles the server; ``check`` says what is present."""
    parser = argparse.ArgumentParser(prog="python -m corl.modules.rewards.spice", description=main.__doc__)
    parser.add_argument("action", choices=["setup", "check", "status"])
    parser.add_argument("--cache", help="cache folder (default $CORL_SPICE_CACHE or ~/.cache/corl/spice)")
    parser.add_argument("--java", default="java")
    parser.add_argument("--javac", default="javac")
    args = parser.parse_args(argv)
    folder = cache_dir(args.cache)
    if args.action == "setup":
        try:
            setup_spice(folder, args.javac)
        except (RuntimeError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    items = inventory(folder, args.java)
    for item, problem in items:
        print(f"ok       {item}" if problem is None else f"MISSING  {item} {problem}")
    missing = sum(problem is not None for _, problem in items)
    print("SPICE is ready" if not missing else f"SPICE is not ready: {missing} missing")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
