"""SIGTERM and SIGINT become a stop request at the next step; other signals are left alone."""

import os
import signal
import threading

from iaat_jax.errors import TrainingStopped
from iaat_jax.run.stop import StopRequest


def test_sigterm_and_sigint_request_a_stop_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    for number, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
        with StopRequest() as stop:
            assert not stop.due(5, agree=True)
            os.kill(os.getpid(), number)
            assert stop.due(6, agree=False) and stop.reason == name
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_stop_message_says_where_it_resumes():
    message = str(TrainingStopped(120, "SIGTERM", "gs://bucket/run"))
    assert message == (
        "stopped by SIGTERM at step 120: checkpoint saved in gs://bucket/run; rerun the same "
        "command to resume from step 120"
    )


def test_a_second_ctrl_c_interrupts_at_once():
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.reason == "SIGINT"
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            return
    raise AssertionError("the second SIGINT did not interrupt")


def test_training_in_a_thread_leaves_the_signal_handlers_alone():
    before, result = signal.getsignal(signal.SIGTERM), []

    def in_thread():
        with StopRequest() as stop:
            result.append((stop.due(1, agree=True), signal.getsignal(signal.SIGTERM)))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert result == [(False, before)]
