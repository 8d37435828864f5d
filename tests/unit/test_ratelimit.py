"""Per-client token buckets: burst, refill, retry hint, independence of clients, bounded memory."""

import pytest

from kiosk.errors import RateLimited
from kiosk.server.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refused_with_a_retry_hint():
    clock = Clock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.admit("CN=kiosk-07")
    with pytest.raises(RateLimited) as caught:
        limiter.admit("CN=kiosk-07")
    assert caught.value.retry_after_ms == 500
    assert caught.value.status_code == "RESOURCE_EXHAUSTED"
    assert caught.value.message == (
        "rate limit reached for this client (2 calls/s, bursts of 3): retry in 500 ms"
    )


def test_tokens_refill_at_the_rate_and_never_past_the_burst():
    clock = Clock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.admit("local")
    clock.now += 0.4  # 0.8 of a token
    with pytest.raises(RateLimited) as caught:
        limiter.admit("local")
    assert caught.value.retry_after_ms == 100
    clock.now += 0.1
    limiter.admit("local")
    clock.now += 3600  # idle for an hour: still only a burst's worth
    for _ in range(3):
        limiter.admit("local")
    with pytest.raises(RateLimited):
        limiter.admit("local")


def test_clients_have_their_own_buckets():
    limiter = RateLimiter(rate_per_s=1.0, burst=1, clock=Clock())
    limiter.admit("CN=back-office-a")
    with pytest.raises(RateLimited):
        limiter.admit("CN=back-office-a")
    limiter.admit("CN=back-office-b")
    limiter.admit("local")


def test_zero_rate_admits_everything():
    limiter = RateLimiter(rate_per_s=0.0, burst=0, clock=Clock())
    assert not limiter.enabled
    for _ in range(1000):
        limiter.admit("local")


def test_memory_is_bounded_by_dropping_the_least_recently_seen_client():
    limiter = RateLimiter(rate_per_s=1.0, burst=1, clock=Clock(), max_clients=2)
    limiter.admit("a")
    limiter.admit("b")
    limiter.admit("c")  # "a" is forgotten: it starts with a full bucket again
    limiter.admit("a")
    with pytest.raises(RateLimited):
        limiter.admit("c")
