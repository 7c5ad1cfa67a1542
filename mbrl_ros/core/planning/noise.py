"""Coloured (power-law) Gaussian noise along the time axis, as used by iCEM.

Noise with power spectral density S(f) ∝ 1/f^β: β = 0 is white noise (plain CEM), β ≈ 2
is Brownian-like and gives smooth, low-frequency action sequences that move a heavy arm
much further than white noise of the same variance (Pinneri et al., iCEM, CoRL 2020).

Generated as in Timmer & König (1995) / the `colorednoise` package: draw Gaussian Fourier
coefficients scaled by f^(-β/2) and transform back. The result is normalised to unit
variance so that β does not change the sampling std the optimiser controls.
"""
from __future__ import annotations

import numpy as np


class ColoredNoise:
    """Unit-variance 1/f^β noise of a fixed length `n` along the last axis.

    The basis is built once per (n, β); `sample` then costs one small matmul of white noise.
    """

    def __init__(self, beta: float, n: int):
        if n < 1:
            raise ValueError(f'noise length must be >= 1, got {n}')
        if not np.isfinite(beta) or beta < 0:
            raise ValueError(f'noise exponent beta must be finite and >= 0, got {beta}')
        self.beta = float(beta)
        self.n = int(n)
        f = np.fft.rfftfreq(self.n)
        # Frequencies below 1/n cannot be represented in n samples: flatten them to 1/n
        # (also avoids the 0^-β at DC).
        f[f < 1.0 / self.n] = 1.0 / self.n
        scale = f ** (-self.beta / 2.0)
        # Exact std of the unscaled irfft output: the DC (and, for even n, Nyquist) term is
        # real with variance 2·s², every other bin contributes 4·s² (its two mirrored halves).
        var = 4.0 * np.sum(scale[1:] ** 2)
        var += 2.0 * scale[0] ** 2  # DC
        if self.n % 2 == 0:
            var -= 2.0 * scale[-1] ** 2  # Nyquist counted as 4·s² above; it is 2·s²
        sigma = np.sqrt(var) / self.n
        self._scale = scale
        self._sigma = sigma if sigma > 0 else 1.0
        # The construction is linear in the Gaussian coefficients, so sampling is one small
        # matmul of white noise with this (k, n) basis (the irfft of each scaled coefficient):
        # the same distribution as running the FFT per sample, at a fraction of the cost.
        nf = scale.shape[0]
        cols = []
        for j in range(nf):
            for imag in (False, True):
                if imag and (j == 0 or (self.n % 2 == 0 and j == nf - 1)):
                    continue  # DC and Nyquist coefficients are real
                c = np.zeros(nf, complex)
                c[j] = scale[j] * (1j if imag else 1.0)
                if not imag and (j == 0 or (self.n % 2 == 0 and j == nf - 1)):
                    c[j] *= np.sqrt(2.0)
                cols.append(np.fft.irfft(c, n=self.n) / self._sigma)
        self.basis = np.array(cols)  # (k, n), k == n
        self._basis32 = self.basis.astype(np.float32)

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Noise of shape `shape + (n,)`, correlated along the last axis."""
        # float32 draws: half the cost of float64, and exploration noise needs no more precision.
        if self.beta == 0.0 or self.n == 1:
            return rng.standard_normal(shape + (self.n,), dtype=np.float32)
        white = rng.standard_normal(shape + (self.basis.shape[0],), dtype=np.float32)
        return white @ self._basis32


def powerlaw_psd_gaussian(beta: float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One-shot convenience: unit-variance 1/f^β noise, correlated along the last axis of `shape`."""
    return ColoredNoise(beta, shape[-1]).sample(rng, tuple(shape[:-1]))
