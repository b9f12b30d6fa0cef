"""The Python layer's fuzz harness (fuzz/fuzz_python.py) in its mutation
mode: every committed image of the read corpus and seeded mutations of
each (truncations, byte flips, header fields, the header check
recomputed) through loads, thaw and the view operations. In a child
process, so that a crash fails this test instead of the run."""

import os
import subprocess
import sys

HARNESS = os.path.join(os.path.dirname(__file__), "..", "fuzz", "fuzz_python.py")


def test_mutated_corpus_images_through_the_python_layer(tmp_path):
    proc = subprocess.run([sys.executable, HARNESS, "--mutate", "150", "--seed", "11"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no failure" in proc.stdout
    opened = int(proc.stdout.split("(")[1].split()[0])
    assert opened > 500, proc.stdout  # mutations reach past the header
