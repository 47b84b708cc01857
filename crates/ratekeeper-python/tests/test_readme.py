"""Every Python block of the README runs as written: each is written to a
file and run as a subprocess against a real server, twice (a snippet must
also work when its limits exist already)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

README = os.path.join(ROOT, "README.md")
with open(README, encoding="utf-8") as readme:
    BLOCKS = re.findall(r"^```python\n(.*?)^```", readme.read(), re.M | re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_readme_python_block_runs_as_written(number, server_url, tmp_path):
    script = tmp_path / f"readme_{number}.py"
    script.write_text(BLOCKS[number])
    env = dict(os.environ, RATEKEEPER_URL=server_url)
    for _ in range(2):
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"block {number} failed:\n{BLOCKS[number]}\n{done.stderr}"
