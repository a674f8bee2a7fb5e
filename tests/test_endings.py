"""The one rule for how an attempt's ending reads (lavalite.endings): mbatchd's core decides
by it whether a job is tried again, and the shepherd by it whether the attempt's output is the
one appended to -o/-e files. No processes."""

import os
import signal

from lavalite import endings
from lavalite.model import CPULIMIT, EXIT, KILLED_REASON, PRE_EXEC, SIGNAL, TIMEOUT
from roles.sbatchd import jobfiles, record


def test_the_reason_of_an_ending():
    assert endings.reason({}, "", 0, None) == ""
    assert endings.reason({}, "", 3, None) == EXIT
    assert endings.reason({}, "", None, signal.SIGTERM) == SIGNAL
    assert endings.reason({}, TIMEOUT, None, signal.SIGKILL) == TIMEOUT
    # the CPU limit's signals are its ending only for a job with -c
    assert endings.reason({}, "", None, signal.SIGXCPU) == SIGNAL
    for sig in (signal.SIGXCPU, signal.SIGKILL):
        assert endings.reason({"cpu_limit": 60.0}, "", None, sig) == CPULIMIT
    assert endings.reason({"cpu_limit": 60.0}, "", None, signal.SIGSEGV) == SIGNAL


def test_which_endings_are_tried_again():
    assert endings.retried(EXIT, 1, 2) and endings.retried(SIGNAL, 1, 2)
    assert not endings.retried(EXIT, 2, 2)
    assert not any(endings.retried(why, 1, 3) for why in (CPULIMIT, TIMEOUT, KILLED_REASON, ""))


def test_the_shepherd_appends_the_output_of_the_attempt_that_ends_the_job(tmp_path):
    path = str(tmp_path / "7.1")
    os.close(record.create(path))

    def ends(status, attempt=1, attempts=3, spec=None):
        return jobfiles.ends_job(status, attempt, attempts, path, spec or {})

    assert ends({"exit_code": 0})
    assert not ends({"exit_code": 1})  # retried: its output is dropped
    assert ends({"exit_code": 1}, attempt=3)
    assert ends({"exit_signal": signal.SIGXCPU}, spec={"cpu_limit": 5.0})  # FAILED(cpulimit)
    assert not ends({"exit_signal": signal.SIGXCPU})  # a plain signal: retried
    assert not ends({"exit_code": 1, "reason": PRE_EXEC}, attempt=3)  # the job never ran
    record.add(path, kill=True)
    assert ends({"exit_code": 1})  # a killed job is not tried again
