""" Old module paths kept for one release (docs/CHANGELOG.md): every public name resolves, with a warning. """
import importlib
import subprocess
import sys
import warnings

import pytest

ALIASES = {
    'timm_normplugins.models.resnet_tn': 'timm_normplugins.models.resnet_cifar',
    'timm_normplugins.models.cifar_resnet': 'timm_normplugins.models.he_cifar_resnet',
    'timm_normplugins.models.add_tensor_norm': 'timm_normplugins.retrofit.add_tensor_norm',
    'timm_normplugins.models.add_error_norm': 'timm_normplugins.retrofit.add_error_norm',
    'timm_normplugins.models.weight_reparam': 'timm_normplugins.retrofit.weight_reparam',
}


@pytest.mark.parametrize('old,new', sorted(ALIASES.items()))
def test_old_path_resolves_every_public_name_with_a_deprecation_warning(old, new):
    alias, target = importlib.import_module(old), importlib.import_module(new)
    assert alias.__all__ == target.__all__ and target.__all__
    for name in target.__all__:
        with pytest.warns(DeprecationWarning, match=f'{old}.{name} is deprecated: import it from {new}'):
            assert getattr(alias, name) is getattr(target, name)
    with pytest.raises(AttributeError):
        getattr(alias, 'no_such_name')


def test_importing_the_package_warns_nothing():
    code = 'import warnings; warnings.simplefilter("error"); import timm_normplugins'
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_name_used_through_an_alias_warns_where_it_is_used():
    alias = importlib.import_module('timm_normplugins.models.resnet_tn')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        alias.CifarResNet  # noqa: B018
    assert caught and caught[0].filename == __file__
