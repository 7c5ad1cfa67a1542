"""Option parsing shared by the CLI commands."""
from __future__ import annotations


def number_pairs(text: str, flag: str = '--weights') -> dict:
    """'effort=0.02,uncertainty=1' -> {'effort': 0.02, 'uncertainty': 1.0}; ValueError naming `flag`."""
    out = {}
    for item in [t for t in text.replace(' ', '').split(',') if t]:
        k, sep, v = item.partition('=')
        try:
            out[k] = float(v)
        except ValueError:
            sep = ''
        if not sep or not k:
            raise ValueError(f'{flag} expects name=number pairs, got {item!r}')
    return out


def stiffness_floor(text: str | None, flag: str = '--stiffness-floor') -> list | None:
    """'60,6' -> [60.0, 6.0] (N/m, N s/m); None or '' -> None; ValueError naming `flag`."""
    if not text:
        return None
    parts = [t for t in text.replace(' ', '').split(',') if t]
    try:
        values = [float(t) for t in parts]
    except ValueError:
        values = []
    if len(values) != 2 or not all(v >= 0 and v < float('inf') for v in values):
        raise ValueError(f'{flag} expects two numbers >= 0 (stiffness N/m, damping N s/m), e.g. 60,6; got {text!r}')
    return values
