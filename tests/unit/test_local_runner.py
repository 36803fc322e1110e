import sys

import pytest

from fruits_pipeline.local_runner import LocalStepError, run_step


def test_runs_a_command_and_reads_its_result_line():
    code = "import sys; print('working'); print('FRUITS_RESULT {\"job\": \"x\", \"read\": 3}', file=sys.stderr)"
    outcome = run_step([sys.executable, "-c", code], name="tiny")
    assert outcome["result"] == {"job": "x", "read": 3} and outcome["seconds"] >= 0


def test_a_failing_command_fails_with_its_error_output():
    code = "import sys; print('boom: no such image', file=sys.stderr); sys.exit(3)"
    with pytest.raises(LocalStepError, match=r"(?s)exit code 3.*boom: no such image"):
        run_step([sys.executable, "-c", code], name="failing")
