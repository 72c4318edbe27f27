import pytest
import torch

from torch_geometric_sdt.utils.precision import (
    PRECISIONS,
    bfloat16_is_fast,
    check_precision,
    inference_precision,
    uses_bfloat16,
)


def test_bfloat16_is_fast_asks_the_cpu_and_says_no_without_its_probes(monkeypatch):
    assert isinstance(bfloat16_is_fast(torch.device('cpu')), bool)
    assert bfloat16_is_fast(torch.device('meta')) is False
    for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported'):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert bfloat16_is_fast(torch.device('cpu')) is False


@pytest.mark.parametrize('bad', ['fp16', 'Float32', '', None, 16])
def test_check_precision_refuses_anything_else(bad):
    with pytest.raises(ValueError, match='precision must be one of'):
        check_precision(bad)


def test_check_precision_returns_its_argument():
    assert [check_precision(p) for p in PRECISIONS] == list(PRECISIONS)


@pytest.mark.parametrize('fast', [False, True])
def test_auto_follows_the_device_and_the_others_do_not(monkeypatch, fast):
    import torch_geometric_sdt.utils.precision as precision

    monkeypatch.setattr(precision, 'bfloat16_is_fast', lambda device: fast)
    cpu = torch.device('cpu')
    assert uses_bfloat16('auto', cpu) is fast
    assert uses_bfloat16('float32', cpu) is False
    assert uses_bfloat16('bfloat16', cpu) is True


def test_inference_precision_sets_the_products_dtype():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    cpu = torch.device('cpu')
    with inference_precision('bfloat16', cpu):
        assert (a @ b).dtype == torch.bfloat16
    with inference_precision('float32', cpu):
        assert (a @ b).dtype == torch.float32
    assert not torch.is_autocast_enabled('cpu')
    with pytest.raises(ValueError, match='precision'):
        with inference_precision('half', cpu):
            pass
