"""Distillation report: success rate and held-out action error per DAgger round (matplotlib)."""
from __future__ import annotations


def plot_rounds(rounds, path, expert_success=None, final=None) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    r = [s.round for s in rounds]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(r, [100 * s.success_rate for s in rounds], 'o-', label='policy (validation goals)')
    if final is not None and final.get('set') == 'test':
        a1.plot([final['selected_round']], [100 * final['success_rate']], '*', ms=14, color='tab:green',
                label=f"kept round, test benchmark ({final['episodes']} goals)")
    if expert_success is not None:
        a1.axhline(100 * expert_success, color='gray', ls='--', label='expert (MPC)')
    a1.axhline(90, color='tab:red', ls=':', label='target 90 %')
    a1.set(xlabel='DAgger round', ylabel='reaching success [%]', ylim=(0, 101), title='closed-loop success')
    a1.legend()
    a2.plot(r, [s.action_rmse for s in rounds], 'o-', label='held-out')
    a2.plot(r, [s.train_loss ** 0.5 for s in rounds], 's--', label='train (last epoch)')
    a2.set(xlabel='DAgger round', ylabel='action RMSE [fraction of effort_max]', title='imitation error')
    a2.legend()
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.set_xticks(r)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
