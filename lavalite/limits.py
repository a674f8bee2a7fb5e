"""Resource sizes as users write them: `bsub -M 512` (MB, as LSF with LSF_UNIT_FOR_LIMITS=MB),
`-M 512M`, `-M 2G`, and the same in queues.conf. Imported by the CLI and the config: stdlib only."""

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str | int | float) -> int:
    """'512' (MB), '512M', '2G', '100K', '1T', with an optional trailing B -> bytes (int).
    ValueError says what was expected."""
    raw = str(text).strip().upper()
    body = raw[:-1] if raw.endswith("B") and len(raw) > 1 and raw[-2] in _UNITS else raw
    mult = _UNITS.get(body[-1:], None)
    number = body[:-1] if mult else body
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"expected a size such as 512 (MB), 512M, 2G, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"expected a size >= 0, got {text!r}")
    return int(value * (mult or _UNITS["M"]))


def format_size(nbytes: int) -> str:
    """Bytes -> the largest whole unit: 536870912 -> '512M'."""
    for unit in "TGMK":
        if nbytes and nbytes % _UNITS[unit] == 0:
            return f"{nbytes // _UNITS[unit]}{unit}"
    return f"{nbytes}B" if nbytes else "0"
