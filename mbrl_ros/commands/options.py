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
