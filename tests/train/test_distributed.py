"""Many hosts (fdl.train.distributed): the errors of joining a job.

Training over several processes is tested end to end in tests/runs/test_hosts.py
(`fdl train --coordinator`: 2 processes of 2 CPU devices train as 1 process of 4).
"""
import socket

import pytest

from fdl.train.distributed import initialize


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_coordinator_that_does_not_answer_is_named_with_the_timeout():
    port = free_port()
    with pytest.raises(ConnectionError, match=rf"^coordinator 127.0.0.1:{port}: no answer within 0.5 s to "
                                              r"process 1 of 2 — start process 0 there first"):
        initialize(f"127.0.0.1:{port}", 2, 1, timeout_s=0.5)
    with pytest.raises(ValueError, match=r"^coordinator: expected HOST:PORT"):
        initialize("localhost", 2, 1)
    with pytest.raises(ValueError, match=r"^process_id: expected an int in \[0, 2\)"):
        initialize("127.0.0.1:1", 2, 2)
    with pytest.raises(ValueError, match=r"^coordinator 'auto' reads the number of processes"):
        initialize("auto", 2, 0)
