""" Every file a user hands the package is checked at the door: no code runs, no crash, no exhaustion,
no silent wrong result; a bad file gives one error naming it (``DataFileError`` / ``CheckpointError``).

Crafted files are built here byte by byte or with pickle itself; exhaustion cases run in a subprocess
under ``resource.setrlimit`` / a timeout, so a regression fails the test instead of the test session.
"""
import io
import os
import pickle
import resource
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _dataset_files import write_cifar
from timm_normplugins.data import DataFileError, create_dataset
from timm_normplugins.data.safe_pickle import load_plain_pickle
from _payloads import RunsCode  # noqa: E402

SAFE_PICKLE = os.path.join(os.path.dirname(__file__), '..', 'timm_normplugins', 'data', 'safe_pickle.py')


def _run_isolated(code: str, timeout: float = 60, address_space: int = 0):
    """Run ``code`` in a fresh interpreter where ``load`` is safe_pickle's loader (numpy only, no torch)."""
    prelude = textwrap.dedent(f'''
        import importlib.util, pickle, resource, sys
        spec = importlib.util.spec_from_file_location('safe_pickle', {os.path.abspath(SAFE_PICKLE)!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        load = mod.load_plain_pickle
        if {address_space}:
            resource.setrlimit(resource.RLIMIT_AS, ({address_space}, {address_space}))
    ''')
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-c', prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _refused_under_memory_limit(imports: str, call: str, error: str, headroom_mb: int, timeout: float = 120):
    """stdout of ``call`` run in a fresh interpreter whose address space may grow only ``headroom_mb`` beyond
    what it holds after ``imports``; ``error`` raised by the call is printed as ``refused: <message>``."""
    code = f'''
import resource
{imports}
vm = [int(line.split()[1]) * 1024 for line in open('/proc/self/status') if line.startswith('VmSize')][0]
resource.setrlimit(resource.RLIMIT_AS, (vm + {headroom_mb} * 2 ** 20, vm + {headroom_mb} * 2 ** 20))
try:
    {call}
except {error} as e:
    print('refused:', str(e).replace(chr(10), ' | '))
'''
    env = dict(os.environ, PYTHONPATH=os.path.abspath(os.path.join(os.path.dirname(__file__), '..')),
               OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


# ------------------------------------------------------------------------------------ CIFAR pickles

# a Python 2 cPickle (protocol 2) file in CIFAR's layout, written out by hand: str keys and filenames as
# SHORT_BINSTRING, the array via numpy.core.multiarray._reconstruct with a py2 str as its data
PY2_BATCH = (b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04"
             b"K\x00\x85U\x01b\x87Rq\x05(K\x01K\x02K\x03\x86cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07"
             b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x06abc\xe9eftb"
             b"U\x06labelsq\x08]q\t(K\x01K\x02eU\tfilenamesq\n]q\x0b(U\x05a.pngq\x0ch\x0ceu.")


def test_py2_cifar_layout_reads_as_pickle_does(tmp_path):
    path = tmp_path / 'data_batch_1'
    path.write_bytes(PY2_BATCH)
    expected = pickle.loads(PY2_BATCH, encoding='latin1')
    got = load_plain_pickle(path)
    assert got.keys() == expected.keys()
    assert got['data'].dtype == np.uint8 and np.array_equal(got['data'], expected['data'])
    assert got['labels'] == [1, 2] and got['filenames'] == ['a.png', 'a.png']
    assert load_plain_pickle(path, encoding='bytes')[b'filenames'] == [b'a.png', b'a.png']


@pytest.mark.parametrize('protocol', [2, 3, 4])
def test_python3_pickles_of_the_cifar_layout(tmp_path, protocol):
    entry = {'batch_label': 'training batch 1 of 5', 'labels': [0, 9, 300, 70000, -5, 2 ** 40],
             'filenames': ['a.png', 'b.png', 'a.png'], b'raw': b'\x00\xff', 'num_vis': 3072,
             'data': np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072),
             'fortran': np.asfortranarray(np.arange(12, dtype=np.uint8).reshape(3, 4))}
    path = tmp_path / 'batch'
    path.write_bytes(pickle.dumps(entry, protocol=protocol))
    got = load_plain_pickle(path)
    assert got.keys() == entry.keys()
    for key, value in entry.items():
        if isinstance(value, np.ndarray):
            assert got[key].dtype == np.uint8 and np.array_equal(got[key], value)
        else:
            assert got[key] == value and type(got[key]) is type(value)


def test_code_in_a_cifar_pickle_does_not_run(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / 'pwned'
    batch = tmp_path / 'cifar-10-batches-py' / 'data_batch_2'
    batch.write_bytes(pickle.dumps({'data': RunsCode(marker), 'labels': []}, protocol=2))
    with pytest.raises(DataFileError, match='data_batch_2') as e:
        create_dataset('cifar10', tmp_path, 'train')
    assert not marker.exists()
    assert '\n' not in str(e.value)


@pytest.mark.parametrize('labels', [['a', 'b', 'c', 'd', 'e', 'f'], [0, 1, 2, 3, 4, 10], [0, 1, 2]])
def test_cifar_labels_that_are_not_class_ids_name_the_file(tmp_path, labels):
    write_cifar(tmp_path)
    batch = tmp_path / 'cifar-10-batches-py' / 'test_batch'
    entry = load_plain_pickle(batch)
    entry['labels'] = labels
    batch.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DataFileError, match=r'test_batch is not a CIFAR batch \(6 images but its "labels"') as e:
        create_dataset('cifar10', tmp_path, 'test')
    assert '\n' not in str(e.value)


class _Dtype:
    """``numpy.dtype('V8')`` whose state gives it an object field: a file could name raw bytes as pointers."""
    def __reduce__(self):
        return np.dtype, ('V8', False, True), (3, '|', None, ('a',), {'a': (np.dtype('O'), 0)}, 8, 1, 0)


class _Array:
    def __reduce__(self):
        from numpy._core import multiarray
        return multiarray._reconstruct, (np.ndarray, (0,), b'b'), (1, (2,), _Dtype(), False, b'\x41' * 16)


def test_crafted_dtype_is_refused_not_crashing(tmp_path):
    path = tmp_path / 'data_batch_1'
    path.write_bytes(pickle.dumps({'data': _Array()}, protocol=2))
    # the old restricted unpickler built this array and repr() of it segfaulted the interpreter
    result = _run_isolated(f'''
        try:
            obj = load({str(path)!r})
        except pickle.UnpicklingError as e:
            print('refused:', e)
        else:
            print(repr(obj))
    ''')
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'refused:' in result.stdout and 'only uint8' in result.stdout


@pytest.mark.parametrize('dtype', ['<f4', 'V8', '<i8'])
def test_other_dtypes_are_refused(tmp_path, dtype):
    path = tmp_path / 'batch'
    path.write_bytes(pickle.dumps({'data': np.zeros((2, 3), dtype=dtype)}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match='only uint8'):
        load_plain_pickle(path)


def test_shared_nested_lists_are_refused_at_once(tmp_path):
    nested = []
    for _ in range(64):  # 2**64 paths through 64 shared lists: a few hundred bytes of pickle
        nested = [nested, nested]
    path = tmp_path / 'data_batch_1'
    path.write_bytes(pickle.dumps({'data': nested}, protocol=2))
    assert path.stat().st_size < 1000
    result = _run_isolated(f'''
        try:
            load({str(path)!r})
        except pickle.UnpicklingError as e:
            print('refused:', e)
    ''', timeout=60)
    assert 'refused:' in result.stdout and 'list item of type list' in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize('body', [
    b']r\xff\xff\xff\x7f.',  # LONG_BINPUT at memo index 2**31-1: the C unpickler grows its memo to it
    b'}r\xfe\xff\xff\xff.',  # ... and an empty dict after it: a valid (empty) result
])
def test_huge_memo_index_takes_no_memory(tmp_path, body):
    path = tmp_path / 'batch'
    path.write_bytes(b'\x80\x02' + body)
    assert path.stat().st_size <= 9
    result = _run_isolated(f'''
        try:
            print('loaded:', load({str(path)!r}))
        except pickle.UnpicklingError as e:
            print('refused:', e)
    ''', address_space=1 << 30)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ('refused:' if body[0:1] == b']' else 'loaded: {}') in result.stdout


@pytest.mark.parametrize('data, why', [
    (b'\x80\x02}q\x01(U\x04data', 'truncated'),
    (b'\x80\x02}h\x05.', 'never PUT'),
    (b'\x80\x02}(X\x01\x00\x00\x00a}u.', 'dict value of type dict'),
    (b'\x80\x02]q\x01.', 'not a dict'),
    (b'\x80\x05}.', 'protocol 5'),
    (b'(dp0\n.', 'not a binary pickle'),
    (b'\x80\x02}.junk', 'after the end'),
    (b'\x80\x02cbuiltins\neval\n.', 'builtins.eval is not allowed'),
    (b'\x80\x02\x8a\x09' + b'\x01' * 9 + b'.', '9-byte integer'),
])
def test_malformed_pickles_give_one_line(tmp_path, data, why):
    path = tmp_path / 'batch'
    path.write_bytes(data)
    with pytest.raises(pickle.UnpicklingError, match=why) as e:
        load_plain_pickle(path)
    assert '\n' not in str(e.value)


def test_array_bytes_must_match_its_shape(tmp_path):
    path = tmp_path / 'batch'
    good = pickle.dumps({'data': np.zeros((2, 3), dtype=np.uint8)}, protocol=3)
    bad = good.replace(b'K\x02K\x03\x86', b'K\x02K\x04\x86')  # the shape (2, 3) -> (2, 4), same 6 bytes
    assert bad != good
    path.write_bytes(bad)
    with pytest.raises(pickle.UnpicklingError, match='holds 6 bytes, not 8'):
        load_plain_pickle(path)


def test_oversized_pickle_is_refused_before_reading(tmp_path, monkeypatch):
    import timm_normplugins.data.safe_pickle as sp
    path = tmp_path / 'batch'
    path.write_bytes(pickle.dumps({'data': np.zeros(100, dtype=np.uint8)}, protocol=2))
    monkeypatch.setattr(sp, 'MAX_FILE_BYTES', 64)
    with pytest.raises(pickle.UnpicklingError, match='more than the 64'):
        sp.load_plain_pickle(path)


# ---------------------------------------------------------------------------------------- checkpoints

def _small_checkpoint(tmp_path, name='small.safetensors'):
    import timm
    from timm_normplugins.checkpoint import save_model
    return save_model(timm.create_model('wcgc_cnn_c', num_classes=3), tmp_path / name)


def _rewrite_metadata(path, **changes):
    import safetensors
    import safetensors.torch
    with safetensors.safe_open(str(path), framework='pt') as f:
        meta = dict(f.metadata())
    tensors = safetensors.torch.load_file(str(path))
    meta.update({f'timm_normplugins.{k}': v for k, v in changes.items()})
    safetensors.torch.save_file(tensors, str(path), metadata=meta)


def _write_raw_safetensors(path, header: dict, data: bytes = b''):
    import json
    import struct
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack('<Q', len(raw)) + raw + data)


def test_metadata_asking_for_a_huge_model_is_refused_before_allocating(tmp_path):
    import json
    path = _small_checkpoint(tmp_path)
    info = __import__('timm_normplugins.checkpoint', fromlist=['x']).read_checkpoint_info(path)
    _rewrite_metadata(path, model_args=json.dumps(dict(info['model_args'], num_classes=60_000_000)))
    assert path.stat().st_size < 3_000_000
    # under an address-space limit of what the process already has + 1.5 GB: a 61 GB classifier cannot hide
    out = _refused_under_memory_limit('import timm_normplugins\nfrom timm_normplugins.checkpoint import '
                                      'CheckpointError, load_model', f'load_model({str(path)!r})', 'CheckpointError',
                                      headroom_mb=1536, timeout=300)
    assert 'refused:' in out
    assert 'fc.weight: (3, 256) vs model (60000000, 256)' in out


@pytest.mark.parametrize('cut', [4, 100, -10])
def test_truncated_safetensors_is_one_line_naming_the_file(tmp_path, cut):
    from timm_normplugins.checkpoint import CheckpointError, load_model, load_weights
    import timm
    path = _small_checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    for load in (lambda: load_model(path), lambda: load_weights(timm.create_model('wcgc_cnn_c', num_classes=3), path)):
        with pytest.raises(CheckpointError, match=str(path)) as e:
            load()
        assert '\n' not in str(e.value)
        assert 'truncated' in str(e.value) or 'shorter than a header' in str(e.value)


@pytest.mark.parametrize('key, value, why', [
    ('model_args', '[1, 2]', 'model_args is a list, expected dict'),
    ('model_args', '{"num_classes": "three"}', 'cannot create wcgc_cnn_c'),
    ('data_config', '"RGB"', 'data_config is a str, expected dict'),
    ('weight_reparam', '5', 'weight_reparam is a int'),
    ('error_norm', '{"area": "nowhere", "modules": ["no.such.layer"]}', 'retrofit metadata cannot be redone'),
    pytest.param('model_args', '{"num_classes": 3, "nested": ' + '[' * 100000 + ']' * 100000 + '}',
                 'not valid JSON', id='deeply-nested-json'),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_metadata_of_the_wrong_type_is_one_line(tmp_path, key, value, why):
    from timm_normplugins.checkpoint import CheckpointError, load_model
    path = _small_checkpoint(tmp_path)
    _rewrite_metadata(path, **{key: value})
    with pytest.raises(CheckpointError, match=why) as e:
        load_model(path)
    assert str(path) in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('header, why', [
    ({'__metadata__': {'timm_normplugins.architecture': 5}}, 'mapping of strings to strings'),
    ({'w': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8], 'extra': 1}}, 'not a safetensors entry'),
    ({'w': {'dtype': 'OBJ', 'shape': [2], 'data_offsets': [0, 8]}}, 'unknown dtype'),
    ({'w': {'dtype': 'F32', 'shape': [-2], 'data_offsets': [0, 8]}}, 'invalid shape'),
    ({'w': {'dtype': 'F32', 'shape': [4], 'data_offsets': [0, 8]}}, 'needs 16 bytes'),
    ({'w': {'dtype': 'F32', 'shape': [2 ** 40], 'data_offsets': [0, 2 ** 42]}}, 'truncated'),
    ([1, 2], 'not a JSON object'),
])
def test_malformed_safetensors_headers(tmp_path, header, why):
    from timm_normplugins.checkpoint import CheckpointError, read_checkpoint_info
    path = tmp_path / 'bad.safetensors'
    _write_raw_safetensors(path, header, b'\x00' * 8)
    with pytest.raises(CheckpointError, match=why) as e:
        read_checkpoint_info(path)
    assert str(path) in str(e.value) and '\n' not in str(e.value)


def test_huge_header_length_is_refused(tmp_path):
    from timm_normplugins.checkpoint import CheckpointError, read_checkpoint_info
    path = tmp_path / 'bad.safetensors'
    path.write_bytes((2 ** 62).to_bytes(8, 'little') + b'{}')
    with pytest.raises(CheckpointError, match='more than'):
        read_checkpoint_info(path)


def test_crafted_torch_file_runs_no_code(tmp_path):
    import timm
    import torch
    from timm_normplugins.checkpoint import CheckpointError, load_weights
    marker = tmp_path / 'pwned'
    path = tmp_path / 'init.pth'
    torch.save({'state_dict': {'fc.weight': RunsCode(marker)}}, path)
    with pytest.raises(CheckpointError, match='init.pth holds more than tensors .*GLOBAL posix.system') as e:
        load_weights(timm.create_model('wcgc_cnn_c', num_classes=3), path)
    assert not marker.exists() and '\n' not in str(e.value)
    # the same file through timm's own hook for our models (pretrained_cfg_overlay=dict(file=...))
    with pytest.raises(CheckpointError, match='init.pth'):
        timm.create_model('resnet34_tn', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert not marker.exists()


def test_torch_and_safetensors_weights_load_exactly(tmp_path):
    import timm
    import torch
    from timm_normplugins.checkpoint import CheckpointError, load_weights
    source = timm.create_model('wcgc_cnn_c', num_classes=3)
    sd = source.state_dict()
    torch.save({'state_dict': {f'module.{k}': v for k, v in sd.items()}, 'epoch': 3}, tmp_path / 'wrapped.pth')
    torch.save(sd, tmp_path / 'plain.pt')
    torch.save(sd, tmp_path / 'legacy.pth', _use_new_zipfile_serialization=False)
    path = _small_checkpoint(tmp_path)
    for name in ('wrapped.pth', 'plain.pt', 'legacy.pth'):
        target = load_weights(timm.create_model('wcgc_cnn_c', num_classes=3), tmp_path / name)
        assert all(torch.equal(target.state_dict()[k], v) for k, v in sd.items()), name
    import safetensors.torch
    target = load_weights(timm.create_model('wcgc_cnn_c', num_classes=3), path)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in safetensors.torch.load_file(str(path)).items())
    with pytest.raises(CheckpointError, match=r'does not fit .*\n.*fc.weight: \(3, 256\) vs model \(5, 256\)'):
        load_weights(timm.create_model('wcgc_cnn_c', num_classes=5), path)
    (tmp_path / 'cut.pth').write_bytes((tmp_path / 'plain.pt').read_bytes()[:500])
    with pytest.raises(CheckpointError, match='cut.pth') as e:
        load_weights(timm.create_model('wcgc_cnn_c', num_classes=3), tmp_path / 'cut.pth')
    assert '\n' not in str(e.value)


# ------------------------------------------------------------------------------------------- images

def _segfolder(root, n=2, size=(12, 10), num_classes=3):
    from PIL import Image
    rng = np.random.default_rng(0)
    for sub in ('images', 'masks'):
        os.makedirs(root / 'train' / sub, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / 'train' / 'images' / f'{i}.png')
        Image.fromarray(rng.integers(0, num_classes, size, dtype=np.uint8)).save(root / 'train' / 'masks' / f'{i}.png')
    (root / 'dataset.yaml').write_text(f'num_classes: {num_classes}\n')


def _png_header_only(width, height):
    """A PNG whose header claims ``width`` x ``height`` grey pixels, with almost no data."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\x00' * 64)) + chunk(b'IEND', b''))


def _one_line_error(ds, index, match):
    with pytest.raises(DataFileError, match=match) as e:
        ds[index]
    assert '\n' not in str(e.value)
    return str(e.value)


def test_segfolder_postscript_named_png_is_not_handed_to_ghostscript(tmp_path):
    _segfolder(tmp_path)
    eps = tmp_path / 'train' / 'images' / '0.png'
    eps.write_bytes(b'%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 12 10\n'
                    b'(pwned) (w) file closefile\nshowpage\n%%EOF\n')
    ds = create_dataset('segfolder', tmp_path, 'train')
    _one_line_error(ds, 0, r'0\.png is not an image in a supported format')
    assert not (tmp_path / 'pwned').exists()
    ds[1]  # the other sample still loads


@pytest.mark.parametrize('which', ['images', 'masks'])
def test_segfolder_truncated_files_name_the_file(tmp_path, which):
    _segfolder(tmp_path)
    path = tmp_path / 'train' / which / '1.png'
    path.write_bytes(path.read_bytes()[:60])
    ds = create_dataset('segfolder', tmp_path, 'train')
    assert str(path) in _one_line_error(ds, 1, 'is not a readable image')


def test_segfolder_mask_values_out_of_range_name_the_mask(tmp_path):
    from PIL import Image
    _segfolder(tmp_path)
    mask = np.zeros((12, 10), dtype=np.uint8)
    mask[3, 4] = 7
    Image.fromarray(mask).save(tmp_path / 'train' / 'masks' / '0.png')
    ds = create_dataset('segfolder', tmp_path, 'train')
    _one_line_error(ds, 0, r'masks/0\.png: mask values \[7\]')


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    _segfolder(tmp_path)
    bomb = tmp_path / 'train' / 'images' / '0.png'
    bomb.write_bytes(_png_header_only(10_000, 9_000))  # 90 M pixels: PIL itself would only warn, then decode
    assert bomb.stat().st_size < 200
    ds = create_dataset('segfolder', tmp_path, 'train')
    _one_line_error(ds, 0, r'10000x9000 pixels, more than the 89478485')


def test_image_pixel_limit_applies_to_every_reader(tmp_path, monkeypatch):
    from timm_normplugins.data import readers
    from _dataset_files import write_voc
    write_voc(tmp_path)
    monkeypatch.setattr(readers, 'MAX_IMAGE_PIXELS', 1000)  # VOC test images are 60x80 and 50x70
    ds = create_dataset('voc2012', tmp_path, 'val')
    _one_line_error(ds, 0, 'more than the 1000')


# ---------------------------------------------------------------------------- Fashion-MNIST and SVHN

def test_fashion_mnist_bad_files_name_the_file(tmp_path):
    import gzip
    from _dataset_files import idx_bytes, write_fashion_mnist
    write_fashion_mnist(tmp_path)
    labels = tmp_path / 'train-labels-idx1-ubyte.gz'
    good = labels.read_bytes()
    labels.write_bytes(good[:len(good) // 2])  # a cut gzip stream
    with pytest.raises(DataFileError, match='train-labels-idx1-ubyte.gz is not a readable idx file') as e:
        create_dataset('fashion_mnist', tmp_path, 'train')
    assert '\n' not in str(e.value)
    labels.write_bytes(b'not gzip at all')
    with pytest.raises(DataFileError, match='train-labels-idx1-ubyte.gz'):
        create_dataset('fashion_mnist', tmp_path, 'train')
    with gzip.open(labels, 'wb') as f:
        f.write(idx_bytes(np.full(12, 12, dtype=np.uint8)))  # labels that are no class
    with pytest.raises(DataFileError, match='train-labels-idx1-ubyte.gz: label 12 is not a Fashion-MNIST class'):
        create_dataset('fashion_mnist', tmp_path, 'train')
    with gzip.open(labels, 'wb') as f:  # a header announcing 4 GB: refused before anything is decompressed
        f.write(b'\x00\x00\x08\x02\x00\x01\x00\x00\x00\x01\x00\x00')
    with pytest.raises(DataFileError, match='more than an idx file may hold'):
        create_dataset('fashion_mnist', tmp_path, 'train')


def test_svhn_bad_files_name_the_file(tmp_path):
    import scipy.io
    from _dataset_files import write_svhn
    write_svhn(tmp_path)
    path = tmp_path / 'train_32x32.mat'
    good = path.read_bytes()
    for bad in (b'MATLAB 5.0 MAT-file garbage' + b'\x00' * 200, good[:len(good) // 2]):
        path.write_bytes(bad)
        with pytest.raises(DataFileError, match='train_32x32.mat is not an SVHN .mat file') as e:
            create_dataset('svhn', tmp_path, 'train')
        assert '\n' not in str(e.value)
    scipy.io.savemat(path, {'X': np.zeros((32, 32, 3, 2), dtype=np.uint8)})  # no labels
    with pytest.raises(DataFileError, match='train_32x32.mat'):
        create_dataset('svhn', tmp_path, 'train')
    scipy.io.savemat(path, {'X': np.zeros((32, 32, 3, 2), dtype=np.uint8), 'y': np.array([[3], [11]], np.uint8)})
    with pytest.raises(DataFileError, match='train_32x32.mat: labels outside 1..10'):
        create_dataset('svhn', tmp_path, 'train')
    scipy.io.savemat(path, {'X': np.zeros((32, 32, 2), dtype=np.float64), 'y': np.array([[3], [1]], np.uint8)})
    with pytest.raises(DataFileError, match='train_32x32.mat'):
        create_dataset('svhn', tmp_path, 'train')


def test_voc_mask_values_out_of_range_name_the_mask(tmp_path):
    from PIL import Image
    from _dataset_files import voc_palette, write_voc
    write_voc(tmp_path)
    path = tmp_path / 'VOCdevkit' / 'VOC2012' / 'SegmentationClass' / '2007_000033.png'
    mask = np.array(Image.open(path))
    mask[5, 5] = 40  # VOC has 21 classes and 255
    png = Image.fromarray(mask, mode='P')
    png.putpalette(voc_palette())
    png.save(path)
    ds = create_dataset('voc2012', tmp_path, 'val')
    _one_line_error(ds, 0, r'2007_000033\.png: mask values \[40\] are neither a class id \(0\.\.20\)')


# ---------------------------------------------------------------------------------------------- CLI

def test_evaluate_cli_truncated_checkpoint_is_one_line(tmp_path):
    import timm
    from timm_normplugins.checkpoint import save_model
    root = os.path.join(os.path.dirname(__file__), '..')
    path = save_model(timm.create_model('resnet34_tn', num_classes=10, layers=(1, 1, 1, 1), channels=(8, 8, 16, 16),
                                        stem_width=8), tmp_path / 'cut.safetensors')
    path.write_bytes(path.read_bytes()[:-1000])  # header intact, data cut
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, os.path.join(root, 'recipes', 'evaluate.py'), '--checkpoint', str(path),
                           '--dataset', 'digits', '--output', str(tmp_path / 'r')],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    assert f'error: {path} is truncated' in proc.stderr
    assert not (tmp_path / 'r').exists()


# ------------------------------------------------------------------------------- torch zip bombs

def _deflated_copy(src, dst):
    """The same torch checkpoint with every record deflated: what a crafted small file asking for a lot is."""
    import zipfile
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w', compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


def test_torch_zip_bomb_is_refused_before_loading(tmp_path):
    import torch
    big = tmp_path / 'big.pth'
    torch.save({'fc.weight': torch.zeros(100_000_000, dtype=torch.uint8)}, big)  # 100 MB of zeros
    bomb = tmp_path / 'bomb.pth'
    _deflated_copy(big, bomb)
    big.unlink()
    assert bomb.stat().st_size < 1_000_000
    # under a memory limit 64 MB above what the interpreter holds once torch is imported
    stdout = _refused_under_memory_limit('import torch\n'
                                         'from timm_normplugins.checkpoint import CheckpointError, read_weights',
                                         f'read_weights({str(bomb)!r})', 'CheckpointError', headroom_mb=64)
    assert f'refused: {bomb} declares 1000' in stdout and '\n' not in stdout.strip()


def test_deflated_small_torch_file_is_refused_and_stored_one_loads(tmp_path):
    import torch
    from timm_normplugins.checkpoint import CheckpointError, read_weights
    sd = {'w': torch.zeros(1000)}
    torch.save(sd, tmp_path / 'ok.pth')
    assert torch.equal(read_weights(tmp_path / 'ok.pth')['w'], sd['w'])
    _deflated_copy(tmp_path / 'ok.pth', tmp_path / 'deflated.pth')
    with pytest.raises(CheckpointError, match='deflated.pth declares .* refused before loading'):
        read_weights(tmp_path / 'deflated.pth')


def test_svhn_compressed_bomb_is_refused_before_loading(tmp_path):
    import scipy.io
    path = tmp_path / 'train_32x32.mat'
    n = 30_000  # 92 MB of zero pixels, compressed to about 100 kB
    scipy.io.savemat(path, {'X': np.zeros((32, 32, 3, n), dtype=np.uint8), 'y': np.ones((n, 1), np.uint8)},
                     do_compression=True)
    assert path.stat().st_size < 1_000_000
    stdout = _refused_under_memory_limit('from timm_normplugins.data import DataFileError, create_dataset',
                                         f'create_dataset("svhn", {str(tmp_path)!r}, "train")', 'DataFileError',
                                         headroom_mb=48)
    assert f'refused: {path}: its compressed variables expand to more than' in stdout


def test_svhn_compressed_file_of_a_real_size_loads(tmp_path):
    import scipy.io
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, 20), dtype=np.uint8)
    y = (np.arange(20) % 10 + 1).astype(np.uint8)[:, None]
    scipy.io.savemat(tmp_path / 'train_32x32.mat', {'X': x, 'y': y}, do_compression=True)
    ds = create_dataset('svhn', tmp_path, 'train')
    assert len(ds) == 20 and sorted(set(ds.targets.tolist())) == list(range(10))


@pytest.mark.parametrize('compressed', [True, False])
def test_idx_header_asking_for_more_than_the_file_holds(tmp_path, compressed):
    import gzip
    from timm_normplugins.data.readers import read_idx
    header = b'\x00\x00\x08\x03' + (60_000).to_bytes(4, 'big') + (100).to_bytes(4, 'big') + (100).to_bytes(4, 'big')
    path = tmp_path / ('images.gz' if compressed else 'images')
    if compressed:  # 600 MB of zeros in about 600 kB
        with gzip.open(path, 'wb', compresslevel=1) as f:
            f.write(header)
            for _ in range(60):
                f.write(b'\x00' * 10_000_000)
    else:  # a 114-byte file
        path.write_bytes(header + b'\x00' * 100)
    stdout = _refused_under_memory_limit('from timm_normplugins.data.readers import DataFileError, read_idx',
                                         f'read_idx({str(path)!r})', 'DataFileError', headroom_mb=128)
    expected = 'more than 64x its size' if compressed else 'is truncated: header says (60000, 100, 100)'
    assert expected in stdout, stdout


def test_image_tar_that_is_compressed_is_refused_without_inflating(tmp_path):
    import io as _io
    import tarfile
    path = tmp_path / 'train.tar'  # 300 MB of "image" in a 300 kB gzip named .tar
    with tarfile.open(path, 'w:gz', compresslevel=1) as tf:
        info = tarfile.TarInfo('cat/0.png')
        info.size = 300_000_000

        class Zeros(_io.RawIOBase):
            left = info.size

            def readable(self):
                return True

            def readinto(self, b):
                n = min(len(b), self.left)
                b[:n] = b'\x00' * n
                self.left -= n
                return n
        tf.addfile(info, _io.BufferedReader(Zeros(), 1 << 20))
    assert path.stat().st_size < 2_000_000
    with pytest.raises(DataFileError, match=r'train\.tar is not a plain tar file') as e:
        create_dataset('imagefolder', path)
    assert '\n' not in str(e.value)
