"""The proxy's request meter of services, which the autoscaler reads."""

from __future__ import annotations

import time

from virtuai.proxy.services import Traffic


def test_traffic_counts_the_last_request_and_the_rate_of_past_seconds() -> None:
    traffic = Traffic(window_s=2)
    assert traffic.last(7) is None
    assert traffic.rate(7) == 0.0
    before = time.time()
    for _ in range(10):
        traffic.hit(7)
    last = traffic.last(7)
    assert last is not None and last >= before
    # The current second is not counted yet (it is partial); once it is past, it is.
    time.sleep(1.05)
    assert traffic.rate(7) == 10 / 2
    assert traffic.rate(8) == 0.0
    time.sleep(2.1)
    assert traffic.rate(7) == 0.0  # out of the window
