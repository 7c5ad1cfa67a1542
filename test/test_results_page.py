"""`mbrl-ros bench results`: one page from the benches themselves, stamped with date, commit and
machine, each section the command a reader can rerun and what it printed."""
import subprocess
import sys


def _results(*argv):
    return subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'bench', 'results', *argv], capture_output=True,
                          text=True, timeout=300)


def test_results_page_is_stamped_and_holds_each_command_and_its_output(tmp_path):
    page = tmp_path / 'results.md'
    res = _results('--quick', '--only', 'zoo-pd,policy-step', '--out', str(page))
    assert res.returncode == 0, res.stdout + res.stderr
    text = page.read_text()
    head = text.splitlines()[2]
    assert 'mbrl-ros bench results --quick' in head and ' UTC at commit ' in head and 'cores' in head, head
    assert 'Smoke run' in text
    # Three URDF arms with the PD's gain rule, then the policy step: each command, then its table.
    assert text.count('`mbrl-ros bench closed-loop --controller osc_pd --robot ') == 3
    assert '--tip-link panda_grasptarget' in text
    assert text.count('(default_gains rule)') == 3 and 'lbr_iiwa' in text and 'xarm6' in text
    assert '`mbrl-ros bench policy --robot arm7' in text and 'p99' in text
    assert 'arm7, chained goals' not in text    # --only left it out
    assert text.count('(exit 0,') == 4


def test_results_refuses_bad_options_clearly(tmp_path):
    res = _results('--only', 'everything', '--out', str(tmp_path / 'r.md'))
    assert res.returncode == 2 and 'unknown' in res.stdout and 'chained' in res.stdout and 'Traceback' not in res.stderr
    res = _results('--out', str(tmp_path / 'no' / 'such' / 'r.md'))
    assert res.returncode == 2 and 'no folder' in res.stdout
