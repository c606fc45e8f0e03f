"""The order tests/conftest.py hands the long tests to the xdist workers."""

from conftest import longest_first


def test_longest_first_pairs_the_longest_with_the_shortest_of_the_first_round():
    seconds = [10.0, 250.0, 0.0, 220.0, 200.0, 160.0, 120.0, 80.0, 50.0, 50.0]
    order = longest_first(seconds, workers=3)
    # the six longest: 250, 220, 200, 160, 120, 80 -> (250, 80), (220, 120), (200, 160); then 50, 50 (stable), 10, 0
    assert [seconds[i] for i in order] == [250.0, 80.0, 220.0, 120.0, 200.0, 160.0, 50.0, 50.0, 10.0, 0.0]
    assert order[6:8] == [8, 9]
    assert sorted(order) == list(range(len(seconds)))


def test_one_worker_or_few_tests_keep_the_plain_longest_first_order():
    assert longest_first([1.0, 3.0, 2.0], workers=1) == [1, 2, 0]
    assert longest_first([1.0, 3.0, 2.0], workers=3) == [1, 2, 0]  # fewer than 2 x workers: nothing to pair
