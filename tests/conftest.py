"""Suite-wide guards against behaviour that differs between releases of the (unpinned) test tools."""
import pytest
import torch

_approx = pytest.approx


def _holds_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v) for v in value)
    return False


def _approx_of_numbers(expected, *args, **kwargs):
    # pytest 9.2 stopped accepting a 0-d tensor as the expected value; older releases took it. Refuse
    # tensors on every release so a test that passes here passes on a fresh machine's newest pytest.
    if _holds_tensor(expected):
        raise TypeError('pytest.approx was given a tensor: pass .item() or .tolist() (pytest >= 9.2 rejects '
                        '0-d tensors, older releases accept them)')
    return _approx(expected, *args, **kwargs)


pytest.approx = _approx_of_numbers


@pytest.fixture
def one_thread():
    """Tiny models: thread start-up costs more than it saves, and the CI machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
