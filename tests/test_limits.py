"""Sizes as users write them (bsub -M, queues.conf): MB by default, as LSF."""

import pytest

from lavalite.limits import format_size, parse_size


@pytest.mark.parametrize(
    "text, value",
    [
        ("512", 512 << 20),
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("2gb", 2 << 30),
        ("100K", 100 << 10),
        ("1.5G", 3 << 29),
        ("1T", 1 << 40),
        ("0", 0),
    ],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-1", "1X", "nan", "inf", "G"])
def test_bad_sizes_say_what_is_expected(text):
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_format_size_picks_the_largest_whole_unit():
    assert [format_size(n) for n in (512 << 20, 2 << 30, 3 << 10, 1536, 0)] == [
        "512M",
        "2G",
        "3K",
        "1536B",
        "0",
    ]
