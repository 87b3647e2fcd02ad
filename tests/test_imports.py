"""Importing the package, its data part and running ``blood-automl --help`` never import TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys
{code}
heavy = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
assert not heavy, heavy
print("ok")
"""

CASES = {
    "import blood_automl": "import blood_automl",
    "import blood_automl.data": "import blood_automl.data",
    "import blood_automl.spaces": "import blood_automl.spaces",
    "import blood_automl.studies": "import blood_automl.studies",
    "import blood_automl.search": "import blood_automl.search",
    "report and dashboard": "import blood_automl.analysis.report, blood_automl.analysis.dashboard",
    "blood-automl --help": (
        "from blood_automl.cli import main\n"
        "for argv in (['--help'], *([c, '--help'] for c in ('inspect-data', 'search', "
        "'refit-best', 'dashboard', 'report', 'predict', 'evaluate', 'explain'))):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), exc.code\n"
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_no_tensorflow(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(code=CASES[name])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
