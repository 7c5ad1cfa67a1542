"""RespawnMemory: what world_model keeps across a respawn within one launch, and only there."""
import os
import subprocess
import sys

from mbrl_ros.ros.respawn_memory import RespawnMemory


def test_a_respawn_under_the_same_launch_recalls_what_was_remembered(tmp_path):
    RespawnMemory('/world_model', 'launch_ab12', tmp_path).remember('model_dir', '/models/b')
    assert RespawnMemory('/world_model', 'launch_ab12', tmp_path).recall('model_dir') == '/models/b'
    assert RespawnMemory('/world_model', 'launch_ab12', tmp_path).recall('other') is None


def test_another_launch_another_node_or_no_key_recalls_nothing(tmp_path):
    RespawnMemory('/world_model', 'launch_ab12', tmp_path).remember('model_dir', '/models/b')
    assert RespawnMemory('/world_model', 'launch_cd34', tmp_path).recall('model_dir') is None
    assert RespawnMemory('/arm2/world_model', 'launch_ab12', tmp_path).recall('model_dir') is None
    none = RespawnMemory('/world_model', '', tmp_path)     # started by hand: no memory at all
    none.remember('model_dir', '/models/c')
    assert none.path is None and none.recall('model_dir') is None and len(list(tmp_path.iterdir())) == 1


def test_another_launcher_process_with_the_same_key_recalls_nothing(tmp_path):
    RespawnMemory('/world_model', 'k', tmp_path).remember('model_dir', '/models/b')
    with subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']) as other:
        try:
            assert RespawnMemory('/world_model', 'k', tmp_path, parent_pid=other.pid).recall('model_dir') is None
        finally:
            other.kill()


def test_a_corrupt_or_foreign_file_recalls_nothing_and_is_replaced(tmp_path):
    m = RespawnMemory('/world_model', 'k', tmp_path)
    tmp_path.mkdir(exist_ok=True)
    for text in ('{unclosed: [', '- a list', 'model_dir: 42', ''):
        m.path.write_text(text)
        assert m.recall('model_dir') is None
    m.remember('model_dir', '/models/b')
    assert m.recall('model_dir') == '/models/b'
    assert [f.name for f in tmp_path.iterdir()] == [m.path.name]   # no temporary file left


def test_prune_removes_the_files_of_launchers_that_are_gone(tmp_path):
    live = RespawnMemory('/world_model', 'k', tmp_path)
    live.remember('model_dir', '/models/b')
    gone = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    dead = RespawnMemory('/world_model', 'k2', tmp_path, parent_pid=os.getpid())
    dead.path = tmp_path / dead.path.name.replace(f'.{os.getpid()}.', f'.{int(gone.stdout)}.')
    dead.remember('model_dir', '/models/c')
    (tmp_path / 'notes.txt').write_text('not ours')
    assert live.prune() == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([live.path.name, 'notes.txt'])
    assert live.recall('model_dir') == '/models/b'
