import json

import pytest
import safetensors.torch
import timm
import torch
from timm.models import save_for_hf

import timm_normplugins  # noqa: F401  (registers the models)
from timm_normplugins import CheckpointError, add_tensor_norm, load_model, read_checkpoint_info, save_model
from timm_normplugins.checkpoint import load_state_dict_checked


def _trained_like(name, **kwargs):
    """A model whose BN statistics and weights differ from a fresh one."""
    torch.manual_seed(1)
    model = timm.create_model(name, **kwargs)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, kwargs.get('in_chans', 3), 32, 32))  # moves BN running stats
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def _same_outputs(a, b, in_chans=3):
    x = torch.randn(2, in_chans, 32, 32)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_plain_safetensors_state_dict_loads_through_timm(tmp_path):
    model = _trained_like('resnet34_tn', num_classes=10)
    path = tmp_path / 'model.safetensors'
    safetensors.torch.save_file(model.state_dict(), str(path))
    loaded = timm.create_model('resnet34_tn', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                               num_classes=10)
    _same_outputs(model, loaded)


@pytest.mark.skipif(not timm.models._hub.has_hf_hub(), reason="this timm does not recognise huggingface_hub's version")
def test_save_for_hf_loads_through_timm(tmp_path):
    model = _trained_like('wrn28_10_tn', num_classes=10, tn_grad='paper')
    save_for_hf(model, tmp_path / 'hf', safe_serialization=True)
    config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
    assert config['architecture'] == 'wrn28_10_tn'
    via_file = timm.create_model('wrn28_10_tn', pretrained=True, num_classes=10,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / 'hf' / 'model.safetensors')))
    _same_outputs(model, via_file)
    via_dir = timm.create_model(f'local-dir:{tmp_path / "hf"}', pretrained=True)  # timm's 'local-dir:' source
    _same_outputs(model, via_dir)


def test_save_model_load_model_round_trip(tmp_path):
    model = _trained_like('resnet34_tn', num_classes=7, in_chans=1, tn_grad='paper')
    path = save_model(model, tmp_path / 'ckpt' / 'model.safetensors', metadata={'epoch': '3'})
    assert not list(path.parent.glob('*.tmp'))
    info = read_checkpoint_info(path)
    assert info['architecture'] == 'resnet34_tn'
    assert info['model_args']['num_classes'] == 7 and info['model_args']['in_chans'] == 1
    assert info['model_args']['tn_grad'] == 'paper'
    assert info['data_config']['mean'] == pytest.approx([117 / 255])
    assert info['metadata']['epoch'] == '3'
    loaded = load_model(path)
    assert {m.grad for m in loaded.modules() if hasattr(m, 'grad') and isinstance(m.grad, str)} == {'paper'}
    _same_outputs(model, loaded, in_chans=1)
    # the same file is an ordinary safetensors state dict for timm
    via_timm = timm.create_model('resnet34_tn', pretrained=True, num_classes=7, in_chans=1, tn_grad='paper',
                                 pretrained_cfg_overlay=dict(file=str(path)))
    _same_outputs(model, via_timm, in_chans=1)


def test_channels_last_and_retrofitted_models(tmp_path):
    model = timm.create_model('resnet18', num_classes=4)
    add_tensor_norm(model, grad='paper')
    model = model.to(memory_format=torch.channels_last).eval()
    path = save_model(model, tmp_path / 'r18.safetensors')
    loaded = load_model(path)
    assert sum(type(m).__name__ == 'ReLUTN' for m in loaded.modules()) == 17
    _same_outputs(model, loaded)


def test_wrong_architecture_is_a_clear_error(tmp_path):
    path = save_model(timm.create_model('resnet34_cifar'), tmp_path / 'r34.safetensors')
    with pytest.raises(CheckpointError, match='resnet34_cifar checkpoint, not wrn28_10'):
        load_model(path, model_name='wrn28_10')
    wrn = timm.create_model('wrn28_10')
    with pytest.raises(CheckpointError, match='does not fit wrn28_10') as err:
        load_state_dict_checked(wrn, safetensors.torch.load_file(str(path)), source=str(path))
    assert 'missing keys' in str(err.value) and 'unexpected keys' in str(err.value)
    # timm's factory goes through the same check, nothing silently half-loaded
    with pytest.raises(CheckpointError, match=r'does not fit wrn28_10 \(it holds resnet34_cifar\)'):
        timm.create_model('wrn28_10', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_wrong_class_count_is_a_clear_error_for_strict_loaders(tmp_path):
    path = save_model(timm.create_model('resnet34_tn', num_classes=100), tmp_path / 'c100.safetensors')
    model = timm.create_model('resnet34_tn', num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match='class count: checkpoint 100, model 10'):
        load_state_dict_checked(model, safetensors.torch.load_file(str(path)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded
    with pytest.raises(CheckpointError, match='shape mismatch'):
        load_model(path, num_classes=10)


# one model per class (one loader, CheckedLoadMixin); the bigger ones take 20-30 s each on two shared cores
@pytest.mark.parametrize('name', ['cifar_resnet20_tn', 'wcgc_cnn_c', *[
    pytest.param(n, marks=pytest.mark.slow) for n in ('resnet34_tn', 'wrn28_10', 'unet_resnet34_tn')]])
def test_pretrained_with_another_class_count_drops_the_classifier(tmp_path, caplog, name):
    """timm's fine-tuning semantics: ``num_classes`` other than the file's drops the classifier, one line says so."""
    torch.manual_seed(2)
    source = timm.create_model(name, num_classes=7)
    head = source.pretrained_cfg['classifier']
    path = save_model(source, tmp_path / 'c7.safetensors', label_names=[f'class {i}' for i in range(7)])
    file = safetensors.torch.load_file(str(path))
    for num_classes in (12, 0):
        torch.manual_seed(3)
        fresh = timm.create_model(name, num_classes=num_classes)
        caplog.clear()
        with caplog.at_level('INFO', logger='timm_normplugins.checkpoint'):
            torch.manual_seed(3)
            tuned = timm.create_model(name, pretrained=True, num_classes=num_classes,
                                      pretrained_cfg_overlay=dict(file=str(path)))
        dropped = [r for r in caplog.records if 'dropped' in r.getMessage()]
        assert len(dropped) == 1 and f'classifier {head} dropped (checkpoint 7 classes, model {num_classes})' \
            in dropped[0].getMessage() and str(path) in dropped[0].getMessage()
        state = tuned.state_dict()
        for key, value in state.items():
            if key.startswith(f'{head}.'):  # the new head as timm initialised it, not the file's
                torch.testing.assert_close(value, fresh.state_dict()[key])
            else:
                torch.testing.assert_close(value, file[key], msg=key)
        assert num_classes == 0 or state[f'{head}.weight'].shape[0] == num_classes
        assert 'label_names' not in tuned.pretrained_cfg  # the names belonged to the dropped head
    # the same class count: loaded whole, names from the file, nothing dropped
    caplog.clear()
    with caplog.at_level('INFO', logger='timm_normplugins.checkpoint'):
        same = timm.create_model(name, pretrained=True, num_classes=7, pretrained_cfg_overlay=dict(file=str(path)))
    assert not [r for r in caplog.records if 'dropped' in r.getMessage()]
    torch.testing.assert_close(same.state_dict()[f'{head}.weight'], file[f'{head}.weight'])
    assert same.pretrained_cfg['label_names'] == tuple(f'class {i}' for i in range(7))


def test_pretrained_mismatch_outside_the_classifier_is_still_an_error(tmp_path):
    path = save_model(timm.create_model('resnet34_tn', num_classes=100), tmp_path / 'c100.safetensors')
    tensors = safetensors.torch.load_file(str(path))
    meta = read_checkpoint_info(path)['metadata']
    tensors['layer1.0.conv1.weight'] = tensors['layer1.0.conv1.weight'][:, :32].contiguous()
    safetensors.torch.save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r'shape mismatch \(1\): layer1.0.conv1.weight'):
        timm.create_model('resnet34_tn', pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path)))
    model = timm.create_model('resnet34_tn', num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match='does not fit resnet34_tn'):
        model.load_pretrained(str(path))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded


def test_pretrained_first_conv_adapts_to_in_chans(tmp_path, caplog):
    """timm's in_chans rule: a 3-channel first conv summed for 1 channel, a 1-channel one repeated and rescaled."""
    source = _trained_like('cifar_resnet20_tn', num_classes=10)
    path = save_model(source, tmp_path / 'rgb.safetensors')
    with caplog.at_level('INFO', logger='timm_normplugins.checkpoint'):
        grey = timm.create_model('cifar_resnet20_tn', pretrained=True, in_chans=1,
                                 pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert any('converted first conv stem.0 from 3 to 1' in r.getMessage() for r in caplog.records)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():  # a grey image is the RGB image with three equal channels
        torch.testing.assert_close(grey(x), source(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    back = save_model(grey, tmp_path / 'grey.safetensors')
    rgb = timm.create_model('cifar_resnet20_tn', pretrained=True, in_chans=3,
                            pretrained_cfg_overlay=dict(file=str(back))).eval()
    with torch.no_grad():
        torch.testing.assert_close(rgb(x.expand(-1, 3, -1, -1)), grey(x), rtol=1e-4, atol=1e-5)


def test_label_names_round_trip(tmp_path):
    model = timm.create_model('wcgc_cnn_c', num_classes=3)
    names = ['cat', 'Ankle boot', 'T-shirt/top ü']
    path = save_model(model, tmp_path / 'named.safetensors', label_names=names)
    info = read_checkpoint_info(path)
    assert info['label_names'] == names
    assert json.loads(info['metadata']['timm_normplugins.label_names']) == names
    assert load_model(path).pretrained_cfg['label_names'] == tuple(names)
    plain = save_model(model, tmp_path / 'plain.safetensors')
    assert read_checkpoint_info(plain)['label_names'] is None
    assert 'label_names' not in load_model(plain).pretrained_cfg


@pytest.mark.parametrize('names, error, match', [
    ('abc', TypeError, 'sequence of strings, got str'),
    (['a', 2, 'c'], TypeError, 'must be strings, got int 2'),
    (['a', 'b'], ValueError, '2 label_names for a model with 3 classes'),
])
def test_save_model_refuses_bad_label_names(tmp_path, names, error, match):
    with pytest.raises(error, match=match):
        save_model(timm.create_model('wcgc_cnn_c', num_classes=3), tmp_path / 'x.safetensors', label_names=names)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize('stored, match', [
    ('{"a": 1}', 'is a dict, expected list or null'),
    ('["a", "b", 3]', 'must be strings, got int 3'),
    ('["a", "b"]', '2 label_names for a model with 3 classes'),
    ('["a", "b", "c"', 'is not valid JSON'),
])
def test_bad_label_names_metadata_is_refused_on_read(tmp_path, stored, match):
    path = save_model(timm.create_model('wcgc_cnn_c', num_classes=3), tmp_path / 'x.safetensors')
    meta = dict(read_checkpoint_info(path)['metadata'], **{'timm_normplugins.label_names': stored})
    safetensors.torch.save_file(safetensors.torch.load_file(str(path)), str(path), metadata=meta)
    for read in (read_checkpoint_info, load_model,
                 lambda p: timm.create_model('wcgc_cnn_c', pretrained=True, num_classes=3,
                                             pretrained_cfg_overlay=dict(file=str(p)))):
        with pytest.raises(CheckpointError, match=match) as err:
            read(path)
        assert str(path) in str(err.value) and '\n' not in str(err.value)


def test_files_that_are_not_our_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / 'absent.safetensors')
    junk = tmp_path / 'junk.safetensors'
    junk.write_bytes(b'not a safetensors file')
    with pytest.raises(CheckpointError, match='not a safetensors file'):
        load_model(junk)
    plain = tmp_path / 'plain.safetensors'
    safetensors.torch.save_file({'w': torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match='no timm_normplugins metadata'):
        load_model(plain)
    model = timm.create_model('resnet34_cifar')
    path = save_model(model, tmp_path / 'x.safetensors')
    meta = read_checkpoint_info(path)['metadata']
    meta['timm_normplugins.architecture'] = 'resnet34_unregistered'
    safetensors.torch.save_file(safetensors.torch.load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(CheckpointError, match='not registered in timm'):
        load_model(path)


@pytest.mark.parametrize('umask', [0o022, 0o077])
def test_checkpoint_file_mode_follows_the_umask(tmp_path, umask):
    """safetensors alone writes 0600; save_model's files get the mode of the run's other outputs."""
    import os
    model = timm.create_model('wcgc_cnn_c', num_classes=3)
    old = os.umask(umask)
    try:
        path = save_model(model, tmp_path / 'model.safetensors')
        other = tmp_path / 'metrics.csv'
        other.write_text('x')
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == (other.stat().st_mode & 0o777) == 0o666 & ~umask
    assert not (tmp_path / 'model.safetensors.tmp').exists()
