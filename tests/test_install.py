""" Installed, not just cloned: the wheel gives the console commands, the packaged configs and py.typed.

Builds the wheel, installs it (``--no-deps``) into a fresh venv outside the checkout that sees the system's
torch & co (``--system-site-packages``), and trains one tiny epoch with ``timm-normplugins-train`` from a
temporary folder. About a minute on two CPU cores: marked slow (``pytest -m slow tests/test_install.py``).
"""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_console_commands(tmp_path):
    wheels = tmp_path / 'wheels'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', str(wheels), str(REPO)],
                   check=True, timeout=600)
    wheel, = wheels.glob('timm_normplugins-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert 'timm_normplugins/py.typed' in names
    assert 'timm_normplugins/configs/fdt_tn/c10_resnet34_tn_fdt.yaml' in names
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', str(venv)], check=True, timeout=300)
    py, bin_dir = venv / 'bin' / 'python', venv / 'bin'
    subprocess.run([str(py), '-m', 'pip', 'install', '-q', '--no-deps', str(wheel)], check=True, timeout=600)
    work = tmp_path / 'work'
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(OMP_NUM_THREADS='1', PATH=f'{bin_dir}{os.pathsep}{env.get("PATH", "")}')
    where = subprocess.run([str(py), '-c', 'import timm_normplugins; print(timm_normplugins.__file__)'], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert str(venv) in where  # the installed copy, not the checkout or an editable install
    proc = subprocess.run(['timm-normplugins-train', '--epochs', '1', '--max-train-samples', '64',
                           '--max-val-samples', '32', '-b', '32', '--workers', '0', '--eval-attack',
                           '--output', 'out', '--experiment', 'run'],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / 'out' / 'run' / 'model.safetensors').exists()
    for argv in (['timm-normplugins-evaluate', '--help'], [str(py), '-m', 'timm_normplugins', 'train', '--help'],
                 [str(py), '-m', 'timm_normplugins', 'train', '-c', 'fdt_tn/c10_resnet34_tn_fdt.yaml', '--help']):
        assert subprocess.run(argv, cwd=work, env=env, capture_output=True, timeout=300).returncode == 0, argv
    # a packaged paper config resolves by name in the installed package
    probe = ('from timm_normplugins.training import parse_args; '
             'print(parse_args(["-c", "fdt_tn/c10_resnet34_tn_fdt.yaml"]).dataset)')
    out = subprocess.run([str(py), '-c', probe], cwd=work, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'cifar10'
