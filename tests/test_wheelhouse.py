"""scripts/wheelhouse.py: what an air-gapped cluster needs is gathered, and installs without an index."""

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("wheelhouse", ROOT / "scripts/wheelhouse.py")
wheelhouse = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheelhouse)


def names(pinned):
    return {line.split("==")[0].lower().replace("_", "-") for line in pinned}


def test_the_wheelhouse_holds_corls_pure_python_needs_beyond_torch_and_transformers():
    pure, compiled = wheelhouse.gather(["pycocoevalcap"])
    gathered = names(pure)
    assert {"jsonargparse", "torchdata", "lpips", "math-verify", "open-clip-torch", "lightning"} <= gathered
    assert not {"torch", "torchvision", "transformers", "numpy", "tokenizers", "huggingface-hub"} & gathered
    assert "pyarrow" in names(compiled) and not names(compiled) & gathered
    assert "pycocoevalcap" not in gathered | names(compiled)  # left out, with pycocotools, its own dependency
    assert "pycocotools" not in gathered | names(compiled)
    from importlib.metadata import version
    assert f"jsonargparse=={version('jsonargparse')}" in pure  # pinned to what is tested here


def test_what_the_target_has_is_left_out_with_its_dependencies():
    everything, _ = wheelhouse.gather([])
    slim, _ = wheelhouse.gather(["lightning", "tensorboard", "peft"])
    assert {"lightning", "lightning-utilities", "torchmetrics", "tensorboard", "peft"} <= names(everything)
    assert not {"lightning", "lightning-utilities", "torchmetrics", "tensorboard", "peft"} & names(slim)
    assert "jsonargparse" in names(slim)


def toy_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, written by hand (nothing downloaded, nothing built)."""
    path = folder / "corltoy-1.0-py3-none-any.whl"
    meta = "corltoy-1.0.dist-info"
    files = {"corltoy.py": "VALUE = 42\n", f"{meta}/METADATA": "Metadata-Version: 2.1\nName: corltoy\nVersion: 1.0\n",
             f"{meta}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{meta}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{meta}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_install_takes_the_folders_wheels_without_an_index(tmp_path):
    folder, target = tmp_path / "wheels", tmp_path / "site"
    folder.mkdir()
    toy_wheel(folder)
    out = subprocess.run([sys.executable, str(ROOT / "scripts/wheelhouse.py"), "install", str(folder), "--target",
                          str(target)], capture_output=True, text=True, check=True).stdout
    assert (target / "corltoy.py").read_text() == "VALUE = 42\n"
    assert "installed 1 wheels" in out and "corl" in out
