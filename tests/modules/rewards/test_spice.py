import copy
import hashlib
import io
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import zipfile

import pytest
import torch

from corl.modules.rewards import spice_setup
from corl.modules.rewards.spice import Spice
from corl.modules.rewards.spice_setup import CORENLP_JARS, MAVEN, cache_dir, main, problems, server_class, setup_spice

CORE, MODELS = CORENLP_JARS


def fake_jar(entries=None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as jar:
        for entry in entries if entries is not None else CORENLP_JARS.values():
            jar.writestr(entry, b"fake")
    return buffer.getvalue()


def fill_cache(folder, jars=True, server=True):
    """A cache that passes the start-up check (jars that only hold the checked entries)."""
    folder.mkdir(parents=True, exist_ok=True)
    if jars:
        for name, entry in CORENLP_JARS.items():
            (folder / name).write_bytes(fake_jar([entry]))
    if server:
        server_class(folder).parent.mkdir(exist_ok=True)
        server_class(folder).write_bytes(b"\xca\xfe\xba\xbe")
    return folder


def serve(monkeypatch, files):
    """Answer urllib.request.urlopen from ``files`` (url -> bytes); record the URLs asked for."""
    asked = []

    def urlopen(url, timeout=None):
        asked.append(url)
        if url not in files:
            raise urllib.error.URLError("Name or service not known")
        return io.BytesIO(files[url])

    monkeypatch.setattr(spice_setup.urllib.request, "urlopen", urlopen)
    return asked


def maven(jars):
    """Maven Central as the fake server sees it: each jar and its published .sha1 (``digest  name``)."""
    files = {}
    for name, (content, digest) in jars.items():
        files[MAVEN + name] = content
        files[MAVEN + name + ".sha1"] = f"{digest or hashlib.sha1(content).hexdigest()}  {name}\n".encode()
    return files


# --- start-up check -------------------------------------------------------------------------------------------


def test_cache_folder_argument_then_environment_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("CORL_SPICE_CACHE", str(tmp_path / "env"))
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert cache_dir() == tmp_path / "env"
    monkeypatch.delenv("CORL_SPICE_CACHE")
    assert cache_dir() == cache_dir("~/.cache/corl/spice").expanduser()
    assert str(cache_dir()).endswith(os.path.join(".cache", "corl", "spice"))


def test_missing_java_says_how_to_install_it(tmp_path):
    metric = Spice(cache=str(fill_cache(tmp_path)), java="no-such-java-binary")
    with pytest.raises(RuntimeError) as error:
        metric.setup()
    message = str(error.value)
    assert "no-such-java-binary" in message and "not found on PATH" in message
    assert "apt-get install openjdk-17-jre-headless" in message
    assert "CoreNLP" not in message and "compiled SPICE server" not in message  # only what is missing
    assert metric.pid is None


def test_missing_jars_and_server_are_all_named_with_the_fix(tmp_path):
    with pytest.raises(RuntimeError) as error:
        Spice(cache=str(tmp_path), java=sys.executable).setup()
    message = str(error.value)
    for name in CORENLP_JARS:
        assert str(tmp_path / name) + " missing" in message
    assert f"compiled SPICE server: {server_class(tmp_path)} missing" in message
    assert "make spice" in message and "python -m corl.modules.rewards.spice setup" in message
    assert "Java runtime" not in message


def test_missing_compiled_server_alone(tmp_path):
    fill_cache(tmp_path, server=False)
    found = problems(tmp_path, java=sys.executable)
    assert len(found) == 1 and "compiled SPICE server" in found[0] and "make spice" in found[0]
    fill_cache(tmp_path)
    assert problems(tmp_path, java=sys.executable) == []
    os.utime(server_class(tmp_path), (0, 0))  # older than SpiceServer.java
    (stale,) = problems(tmp_path, java=sys.executable)
    assert "older than" in stale and "SpiceServer.java" in stale


def test_broken_jars_are_rejected(tmp_path):
    fill_cache(tmp_path)
    (tmp_path / CORE).write_bytes(b"<html>not found</html>")
    (tmp_path / MODELS).write_bytes(fake_jar([CORENLP_JARS[CORE]]))  # a zip without the parser model
    found = problems(tmp_path, java=sys.executable)
    assert len(found) == 2
    assert CORE in found[0] and "not a jar" in found[0]
    assert MODELS in found[1] and f"has no {CORENLP_JARS[MODELS]}" in found[1]


# --- downloads from (a fake) Maven Central --------------------------------------------------------------------


def test_download_checks_sha1_and_content(monkeypatch, tmp_path):
    jar = fake_jar()
    asked = serve(monkeypatch, maven({CORE: (jar, None), MODELS: (jar, None)}))
    logged = []
    for name in CORENLP_JARS:
        assert spice_setup.download_jar(name, tmp_path, logged.append) == tmp_path / name
        assert (tmp_path / name).read_bytes() == jar
    assert asked == [MAVEN + CORE + ".sha1", MAVEN + CORE, MAVEN + MODELS + ".sha1", MAVEN + MODELS]
    assert any("SHA-1" in line and "ok" in line for line in logged)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CORENLP_JARS)  # no .part left


def test_wrong_checksum_is_rejected_and_leaves_nothing(monkeypatch, tmp_path):
    serve(monkeypatch, maven({CORE: (fake_jar(), "0" * 40)}))
    with pytest.raises(RuntimeError, match="SHA-1 of .* is [0-9a-f]{40}, Maven Central publishes 0{40}"):
        spice_setup.download_jar(CORE, tmp_path, print)
    assert list(tmp_path.iterdir()) == []


def test_jar_without_the_expected_entry_is_rejected(monkeypatch, tmp_path):
    serve(monkeypatch, maven({MODELS: (fake_jar(["README"]), None)}))
    with pytest.raises(RuntimeError, match=f"has no {CORENLP_JARS[MODELS]}"):
        spice_setup.download_jar(MODELS, tmp_path, print)
    assert list(tmp_path.iterdir()) == []


def test_offline_download_names_the_url_and_the_manual_way(monkeypatch, tmp_path):
    serve(monkeypatch, {})
    with pytest.raises(RuntimeError) as error:
        spice_setup.download_jar(CORE, tmp_path, print)
    message = str(error.value)
    assert f"could not download {MAVEN}{CORE}.sha1" in message
    assert "by hand" in message and str(tmp_path) in message and MODELS in message


def test_setup_skips_what_is_valid(monkeypatch, tmp_path):
    fill_cache(tmp_path)
    asked = serve(monkeypatch, {})
    logged = []
    assert setup_spice(tmp_path, javac="no-such-javac", log=logged.append) == tmp_path
    assert asked == []  # nothing downloaded, nothing compiled
    assert sum("present" in line for line in logged) == 2 and any("up to date" in line for line in logged)


# --- command line --------------------------------------------------------------------------------------------


def test_check_command_lists_present_and_missing(capsys, tmp_path):
    fill_cache(tmp_path, jars=False)
    assert main(["check", "--cache", str(tmp_path), "--java", sys.executable]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"ok       Java runtime: {shutil.which(sys.executable)}"
    assert any(line.startswith("ok       SPICE: ") and line.endswith("spice-1.0.jar") for line in out)
    assert sum(line.startswith(f"MISSING  CoreNLP: {tmp_path}") for line in out) == 2
    assert any(line.startswith(f"ok       compiled SPICE server: {server_class(tmp_path)}") for line in out)
    assert out[-1] == "SPICE is not ready: 2 missing"

    fill_cache(tmp_path)
    assert main(["status", "--cache", str(tmp_path), "--java", sys.executable]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "SPICE is ready"


def test_setup_command_reports_a_failed_download(monkeypatch, capsys, tmp_path):
    fill_cache(tmp_path, jars=False)
    serve(monkeypatch, {})
    assert main(["setup", "--cache", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: could not download {MAVEN}{CORE}.sha1")
    assert not (tmp_path / CORE).exists()


def test_module_entry_point(tmp_path):
    env = {**os.environ, "CORL_SPICE_CACHE": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "corl.modules.rewards.spice", "check", "--java", "no-such-java-binary"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "MISSING  Java runtime: no-such-java-binary not found on PATH" in result.stdout
    assert result.stdout.splitlines()[-1] == "SPICE is not ready: 4 missing"


# --- the client against a stand-in server (the protocol, without Java) -----------------------------------------

STAND_IN = textwrap.dedent(
    """
    import json, sys
    print("READY", flush=True)
    for line in sys.stdin:
        items = json.loads(line)
        tests = [item["test"] for item in items]
        if "boom" in tests:
            print("ERROR java.lang.IllegalStateException: boom", flush=True)
        elif "die" in tests:
            print("dying on purpose", file=sys.stderr, flush=True)
            sys.exit(3)
        else:
            print(json.dumps([None if t == "none" else float(t == item["refs"][0]) for t, item in zip(tests, items)]))
            sys.stdout.flush()
    """
)


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    def command(self):
        return [sys.executable, "-c", STAND_IN]

    monkeypatch.setattr(Spice, "command", command)
    metric = Spice(cache=str(tmp_path), timeout_s=20)
    yield metric
    metric.close()


def test_one_process_serves_every_call(stand_in):
    stand_in.setup()
    pid = stand_in.pid
    scores = stand_in(["a red cube", "none", "", "x"], ["a red cube", "b", "c", "y"])
    assert scores.dtype == torch.float32 and scores.shape == (4,)
    assert scores[0] == 1.0 and scores[1].isnan() and scores[2] == 0.0 and scores[3] == 0.0
    assert stand_in(["b"], ["b"]).tolist() == [1.0]
    assert stand_in.pid == pid
    process = stand_in._process
    stand_in.close()
    assert process.poll() is not None and stand_in.pid is None


def test_error_reply_raises_and_the_server_keeps_serving(stand_in):
    with pytest.raises(RuntimeError, match="SPICE server: java.lang.IllegalStateException: boom"):
        stand_in(["boom"], ["x"])
    assert stand_in(["x"], ["x"]).tolist() == [1.0]


def test_a_dead_server_is_reported_with_its_log(stand_in):
    stand_in.setup()
    with pytest.raises(RuntimeError, match=r"exited \(code 3\) during score(.|\n)*dying on purpose"):
        stand_in(["die"], ["x"])


def test_blank_captions_need_no_server(tmp_path):
    metric = Spice(cache=str(tmp_path), java="no-such-java-binary")
    assert metric(["", "  "], ["a cat", ""]).tolist() == [0.0, 0.0]
    assert metric.pid is None
    with pytest.raises(ValueError, match="2 candidates for 1 references"):
        metric(["a", "b"], ["a"])


def test_start_timeout(monkeypatch, tmp_path):
    monkeypatch.setattr(Spice, "command", lambda self: [sys.executable, "-c", "import time; time.sleep(60)"])
    metric = Spice(cache=str(tmp_path), timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"did not start within 0.5 s"):
        metric.setup()
    assert time.monotonic() - start < 15 and metric.pid is None


def test_copies_leave_the_process_behind(stand_in):
    stand_in.setup()
    twin = copy.deepcopy(stand_in)
    assert twin.pid is None and stand_in.pid is not None
    assert twin.timeout_s == stand_in.timeout_s


# --- the real Java server -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    if shutil.which("javac") is None:
        pytest.skip("javac is not installed (a JDK is needed to compile SpiceServer.java)")
    folder = tmp_path_factory.mktemp("spice")
    spice_setup.compile_server(folder)
    return folder


def test_server_compiles_against_spice_jars_alone(compiled):
    assert server_class(compiled).read_bytes()[:4] == b"\xca\xfe\xba\xbe"
    assert spice_setup.server_is_current(compiled)
    assert [p for p in problems(compiled) if "compiled SPICE server" in p] == []


@pytest.mark.skipif(shutil.which("java") is None, reason="java is not installed")
def test_server_without_corenlp_classes_fails_fast_and_clearly(compiled):
    fill_cache(compiled, server=False)  # jars that pass the check but hold no CoreNLP classes
    metric = Spice(cache=str(compiled), heap="256m", timeout_s=60)
    start = time.monotonic()
    with pytest.raises(RuntimeError) as error:
        metric.setup()
    message = str(error.value)
    assert time.monotonic() - start < 30
    assert "SPICE server exited (code 1) during start" in message
    assert "NoClassDefFoundError: edu/stanford/nlp" in message and "CoreNLP jars" in message
    assert metric.pid is None


def _real_setup_missing():
    return problems(cache_dir())


@pytest.mark.skipif(
    bool(_real_setup_missing()),
    reason=f"SPICE not set up in {cache_dir()} (needs Java, {CORE} and {MODELS}: run `make spice`)",
)
def test_real_spice_scores():
    metric = Spice(heap="4g", threads=2)
    try:
        metric.setup()
        pid = metric.pid
        same, other = "a red cube next to a blue ball", "two dogs running on the beach"
        scores = metric([same, other, ""], [same, same, same])
        assert scores.dtype == torch.float32 and ((scores >= 0) & (scores <= 1)).all()
        assert scores[0] > 0.9 and scores[1] < scores[0] and scores[2] == 0
        again = metric(["a blue ball", same], [same, same])
        assert metric.pid == pid and 0 < again[0] < 1 and again[1] == scores[0]
    finally:
        metric.close()
