""" ``python -m timm_normplugins.run SCRIPT``: timm's scripts see this package's models and optimizers. """
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# stands in for timm's validate.py / train.py: imports only timm, reads its own argv, runs as __main__
FAKE_TIMM_SCRIPT = '''
import sys
import timm
from timm.optim import create_optimizer_v2
assert __name__ == '__main__'
name = sys.argv[sys.argv.index('--model') + 1]
model = timm.create_model(name, num_classes=3)
model.set_grad_checkpointing(enable=True)  # train.py --grad-checkpointing
create_optimizer_v2(model, opt='sgd_wcgc', lr=0.1)
print('ran', type(model).__name__, sys.argv[0].endswith('fake_validate.py'))
'''


def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_timm_script_sees_the_plugins(tmp_path):
    script = tmp_path / 'fake_validate.py'
    script.write_text(FAKE_TIMM_SCRIPT)
    plain = _run([str(script), '--model', 'cifar_resnet20_tn'], tmp_path)
    assert plain.returncode != 0 and 'cifar_resnet20_tn' in plain.stderr  # timm alone does not know it
    proc = _run(['-m', 'timm_normplugins.run', str(script), '--model', 'cifar_resnet20_tn'], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'ran HeCifarResNet True'


def test_missing_script_is_a_clear_error(tmp_path):
    proc = _run(['-m', 'timm_normplugins.run', 'validate.py', '--model', 'x'], tmp_path)
    assert proc.returncode != 0 and 'the timm wheel does not ship them' in proc.stderr
    assert 'Traceback' not in proc.stderr
