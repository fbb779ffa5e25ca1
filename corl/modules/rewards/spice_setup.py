"""Setting SPICE up once per machine: the CoreNLP 3.6.0 jars from Maven Central and the compiled Java server.

Set-up downloads about 370 MB from Maven Central, checks each jar against its SHA-1 file and the entry
it must hold, and compiles ``java/SpiceServer.java`` against pycocoevalcap's SPICE jars::

    make spice        # or: python -m corl.modules.rewards.spice setup [--cache DIR]
    python -m corl.modules.rewards.spice check

The cache folder is ``--cache``, else ``$CORL_SPICE_CACHE``, else ``~/.cache/corl/spice``. Without
internet, copy ``stanford-corenlp-3.6.0.jar`` and ``stanford-corenlp-3.6.0-models.jar`` into it by hand
and run ``setup`` to compile the server.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

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
