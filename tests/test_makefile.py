"""`make demo` announces each phase with its number, what it does and the time so far, in order."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_announces_its_phases_in_order_with_the_time_so_far():
    plan = subprocess.run(["make", "-n", "--no-print-directory", "demo", "DEMO_START=100"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    announcements = [line for line in plan.splitlines() if "== demo" in line]
    assert [re.search(r'"(\d)/4"', line).group(1) for line in announcements] == ["1", "2", "3", "4"]
    commands = [line for line in plan.splitlines() if "== demo" in line or "corl " in line or "make " in line]
    order = ('"1/4"', "corl warm", '"2/4"', "configs/demo/s1.yaml", '"3/4"', "-j2", "configs/demo/s2_t2i.yaml",
             '"4/4"', "corl evaluate base=tiny-warm s1=checkpoints/demo/s1/last.ckpt s2_t2i=", "corl grid")
    firsts = [next(i for i, line in enumerate(commands) if key in line) for key in order]
    assert firsts == sorted(firsts), "each phase is announced right before it runs"
    shown = subprocess.run(["bash", "-c", announcements[1]], capture_output=True, text=True, check=True).stdout
    assert re.fullmatch(r"\n== demo 2/4 at \d+:\d\d: stage 1: .*\n", shown)


def test_stage_two_shows_one_progress_bar_and_scores_every_model_once():
    plan = subprocess.run(["make", "-n", "--no-print-directory", "demo-t2i", "demo-mm2t"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.replace("\\\n", " ")
    fits = [line for line in plan.splitlines() if "corl fit" in line]
    assert [("enable_progress_bar false" in line) for line in fits] == [False, True, True], "the T2I run's bar only"
    scored = re.findall(r"(\w+)=(?:checkpoints|exports|tiny-warm)", " ".join(
        line for line in plan.splitlines() if "corl evaluate" in line))
    assert sorted(scored) == sorted(["s2_t2i", "base", "s1", "s2_mcq", "s2_oe", "mm2t"])
