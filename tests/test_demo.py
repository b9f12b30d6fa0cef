"""The README's first command runs bench/demo.py: it must keep working,
both parts (the table stage, then the whole pipeline of classes shared with
permafrost.share), with equal results from the plain and the shared runs."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO = os.path.join(HERE, "..", "bench", "demo.py")


def test_demo_runs_both_parts_with_equal_results(tmp_path):
    proc = subprocess.run(
        [sys.executable, DEMO, "--size", "3000", "--trie-words", "500",
         "--batch", "500", "--tmpdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("| match") == 2, out
    assert "MISMATCH" not in out and "FAILED" not in out
    assert "an instance of Pipeline" in out
    assert os.listdir(tmp_path) == []      # the demo removed its files
