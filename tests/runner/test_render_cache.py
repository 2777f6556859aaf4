"""A worker's cache of rendering answers: bounded by entries and characters, least recently used out first."""

from __future__ import annotations

import threading

from nbrelay.runner.render_cache import RenderCache


def test_an_answer_is_computed_once_and_then_kept() -> None:
    cache: RenderCache[str] = RenderCache(len)
    calls: list[str] = []

    def compute(key: str) -> str:
        calls.append(key)
        return key.upper()

    assert cache.get("a", lambda: compute("a")) == "A"
    assert cache.get("a", lambda: compute("a")) == "A"
    assert calls == ["a"] and (cache.hits, cache.misses) == (1, 1)


def test_the_least_recently_used_entry_goes_first_when_over_the_count() -> None:
    cache: RenderCache[str] = RenderCache(len, max_entries=2)
    cache.get("a", lambda: "A")
    cache.get("b", lambda: "B")
    cache.get("a", lambda: "A")  # a is now the most recent
    cache.get("c", lambda: "C")
    assert len(cache) == 2
    assert cache.get("a", lambda: "computed again") == "A"
    assert cache.get("b", lambda: "computed again") == "computed again"


def test_the_characters_kept_stay_under_the_bound() -> None:
    cache: RenderCache[str] = RenderCache(len, max_chars=10)
    for key in range(5):
        cache.get(key, lambda: "x" * 4)
    assert cache.chars <= 10 and len(cache) == 2


def test_an_answer_larger_than_the_bound_is_not_kept() -> None:
    cache: RenderCache[str] = RenderCache(len, max_answer_chars=3)
    assert cache.get("big", lambda: "abcd") == "abcd"
    assert len(cache) == 0 and cache.chars == 0
    assert cache.get("big", lambda: "again") == "again"


def test_threads_sharing_it_get_their_own_keys_answers() -> None:
    cache: RenderCache[str] = RenderCache(len, max_entries=50)
    wrong: list[tuple[int, str]] = []

    def use(offset: int) -> None:
        for i in range(2000):
            key = (offset + i) % 200
            answer = cache.get(key, lambda k=key: f"answer {k}")
            if answer != f"answer {key}":
                wrong.append((key, answer))

    threads = [threading.Thread(target=use, args=(n * 7,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong
    assert len(cache) <= 50 and cache.chars == sum(len(f"answer {k}") for k in cache._answers)
