"""Wheels for an air-gapped cluster: corl and the pure-Python packages it needs beyond torch, torchvision, transformers.

    python scripts/wheelhouse.py build wheelhouse [--leave-out pycocoevalcap ...]  # online: make wheelhouse
    python scripts/wheelhouse.py install wheelhouse [--target DIR]                 # offline: make install-offline

``build`` walks corl's requirements as installed here, leaves out what torch, torchvision and transformers
bring (a cluster's image has those, with numpy, pillow, PyYAML, huggingface_hub ...) and what ``--leave-out``
names (the target has them, or does without them; their own dependencies too), and writes a wheel of each
remaining package at the version installed here, plus corl's own, into the folder with a
``requirements.txt`` of them. Packages with compiled code are not gathered (their wheels are large and
built for one Python): they are listed in ``compiled.txt``, and ``install`` names the ones the target lacks.
``pycocoevalcap`` is left out by default: 100 MB, for SPICE and CIDEr-D only.

``install`` installs the folder's wheels with pip, without an index and without resolving dependencies again
(the list is already the whole closure), into the running Python or ``--target DIR`` (then put DIR on
PYTHONPATH), and reports every corl requirement still missing.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROVIDED = ("torch", "torchvision", "transformers")  # what a cluster's image has
REQUIREMENTS, COMPILED = "requirements.txt", "compiled.txt"


def closure(roots: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``roots`` need, themselves included, following extras and markers."""
    found: dict[str, metadata.Distribution] = {}
    pending = [Requirement(root) for root in roots]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            found[name] = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this environment does without
        for line in found[name].requires or []:
            needed = Requirement(line)
            extras = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in extras):
                pending.append(needed)
    return found


def is_pure(dist: metadata.Distribution) -> bool:
    """Whether its wheel runs on any platform (every tag ``…-none-any``): no compiled code."""
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    return bool(tags) and all(tag.endswith("-none-any") for tag in tags)


def gather(leave_out: list[str]) -> tuple[list[str], list[str]]:
    """``name==version`` of the pure-Python and of the compiled packages corl needs beyond the provided ones."""
    provided = closure([*PROVIDED, *leave_out])
    needed = [dist for name, dist in closure(["corl"]).items() if name not in provided and name != "corl"]
    pure = sorted(f"{dist.metadata['Name']}=={dist.version}" for dist in needed if is_pure(dist))
    compiled = sorted(f"{dist.metadata['Name']}=={dist.version}" for dist in needed if not is_pure(dist))
    return pure, compiled


def build(folder: Path, leave_out: list[str]) -> None:
    """Write the wheels, ``requirements.txt`` and ``compiled.txt`` into ``folder``."""
    pure, compiled = gather(leave_out)
    folder.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[1]
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(folder)]
    subprocess.run([*pip, *pure], check=True)
    subprocess.run([*pip, str(root)], check=True)
    (folder / REQUIREMENTS).write_text("".join(line + "\n" for line in pure))
    (folder / COMPILED).write_text("".join(line + "\n" for line in compiled))
    size = sum(path.stat().st_size for path in folder.glob("*.whl"))
    print(f"{folder}: {len(pure)} wheels and corl's, {size / 2**20:.1f} MiB; the target must already have: "
          f"{', '.join(compiled) or 'nothing more'}; left out: {', '.join(leave_out) or '-'}")


def missing(target: Path | None) -> list[str]:
    """The requirements of corl that the environment (with ``target`` on the path) does not satisfy."""
    if target is not None:
        sys.path.insert(0, str(target))
    problems = []
    for line in metadata.distribution("corl").requires or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement} (not installed)")
            continue
        if not requirement.specifier.contains(installed.split("+")[0], prereleases=True):
            problems.append(f"{requirement} (installed: {installed})")
    return problems


def install(folder: Path, target: Path | None) -> None:
    """Install the folder's wheels without network; report what corl still lacks."""
    wheels = sorted(str(path) for path in folder.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"{folder}: no wheels (make wheelhouse writes them)")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", *wheels]
    if target is not None:
        command[4:4] = ["--target", str(target), "--upgrade"]
    subprocess.run(command, check=True)
    problems = missing(target)
    where = f" (with {target} on PYTHONPATH)" if target else ""
    if problems:
        print(f"installed {len(wheels)} wheels{where}; corl still needs: " + "; ".join(problems))
    else:
        print(f"installed {len(wheels)} wheels{where}; every corl requirement is satisfied")


def main() -> None:
    """``build`` or ``install`` (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("build", help="gather the wheels (online)")
    p.add_argument("folder", type=Path)
    p.add_argument("--leave-out", nargs="*", default=["pycocoevalcap"],
                   help="packages the target has or does without (with their dependencies)")
    p = commands.add_parser("install", help="install them (offline)")
    p.add_argument("folder", type=Path)
    p.add_argument("--target", type=Path, help="install into this folder instead of the environment")
    args = parser.parse_args()
    build(args.folder, args.leave_out) if args.command == "build" else install(args.folder, args.target)


if __name__ == "__main__":
    main()
