"""The tests' one way of waiting for a condition: conftest.wait_until."""

import pytest
from conftest import wait_until


def test_returns_the_first_truthy_value():
    values = iter([None, 0, "", {"job": 7}, "later"])
    assert wait_until(lambda: next(values), 10, "a value", interval=0) == {"job": 7}


def test_times_out_naming_what_it_waited_for_and_the_last_value():
    with pytest.raises(AssertionError, match=r"waiting for the job to end; last value: \[\]"):
        wait_until(lambda: [], 0, "the job to end")
    told = []
    with pytest.raises(AssertionError, match="the logs"):
        wait_until(lambda: None, 0, lambda: told.append(1) or "the logs")
    assert told == [1], "a callable `what` is called once, at the timeout"
