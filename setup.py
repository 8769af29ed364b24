""" setuptools hook: the paper configs (``recipes/configs``, the source of truth) are installed as package
data ``timm_normplugins/configs`` so that ``-c fdt_tn/c10_resnet34_tn_fdt.yaml`` works without a checkout.
Everything else is in pyproject.toml. """
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIGS = Path(__file__).resolve().parent / 'recipes' / 'configs'


class BuildPyWithConfigs(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / 'timm_normplugins' / 'configs'
        shutil.copytree(CONFIGS, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns('__pycache__'))


setup(cmdclass={'build_py': BuildPyWithConfigs})
