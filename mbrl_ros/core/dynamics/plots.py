"""Training-curve figure (matplotlib, Agg: works headless)."""
from __future__ import annotations

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_training_curve(history: dict, path, title: str = 'ensemble training') -> None:
    epochs = history['epoch']
    mse = np.asarray(history['holdout_mse'])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(epochs, history['train_loss'], label='train NLL (per member)')
    ax1.plot(epochs, history['holdout_nll'], label='holdout NLL (mixture)')
    ax1.set_xlabel('epoch')
    ax1.set_ylabel('Gaussian NLL (normalised units)')
    ax1.legend()
    ax1.grid(alpha=0.3)
    for e in range(mse.shape[1]):
        ax2.semilogy(epochs, mse[:, e], lw=1, alpha=0.8, label=f'member {e}')
    ax2.set_xlabel('epoch')
    ax2.set_ylabel('holdout MSE (normalised delta)')
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3, which='both')
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
