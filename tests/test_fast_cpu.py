# Copyright (c) yolact_d2 contributors.
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, FrozenBatchNorm2d

from yolact_d2.layers import ModulatedDeformConv2d
from yolact_d2.modeling import fast_cpu
from yolact_d2.modeling.fast_cpu import (
    CompiledModule,
    InferenceCopy,
    fold_batch_norm_,
    fold_batch_norms_,
    resolve_fast_cpu_dtype,
)
from yolact_d2.utils.cpu import cpu_flags

from common import get_model


def _randomise_norm(norm: nn.Module, generator: torch.Generator) -> nn.Module:
    channels = norm.weight.shape[0]
    with torch.no_grad():
        norm.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(channels, generator=generator))
        norm.running_mean.copy_(torch.randn(channels, generator=generator))
        norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.1)
    return norm.eval()


@pytest.mark.parametrize("norm_type", [nn.BatchNorm2d, FrozenBatchNorm2d])
@pytest.mark.parametrize("bias", [False, True])
def test_folded_conv_matches_conv_then_norm(norm_type, bias):
    g = torch.Generator().manual_seed(0)
    norm = _randomise_norm(norm_type(8), g)
    conv = Conv2d(4, 8, 3, padding=1, bias=bias, norm=norm, activation=F.relu).eval()
    x = torch.randn(2, 4, 9, 11, generator=g)
    with torch.no_grad():
        expected = conv(x)
        assert fold_batch_norm_(conv)
        assert conv.norm is None and conv.bias is not None
        torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_deformable_conv_folds_and_training_norms_do_not():
    g = torch.Generator().manual_seed(1)
    deform = ModulatedDeformConv2d(4, 6, bias=False, norm=_randomise_norm(nn.BatchNorm2d(6), g))
    nn.init.normal_(deform.conv_offset_mask.weight, std=0.1)
    x = torch.randn(1, 4, 8, 8, generator=g)
    with torch.no_grad():
        expected = deform.eval()(x)
        assert fold_batch_norm_(deform)
        torch.testing.assert_close(deform(x), expected, rtol=1e-5, atol=1e-5)
    training = Conv2d(4, 6, 1, norm=nn.BatchNorm2d(6)).train()
    plain = Conv2d(4, 6, 1)
    assert fold_batch_norms_(nn.Sequential(training, plain)) == 0
    assert isinstance(training.norm, nn.BatchNorm2d)


def test_fast_cpu_dtype_names():
    assert resolve_fast_cpu_dtype("float32") is None
    assert resolve_fast_cpu_dtype("bfloat16") is torch.bfloat16
    # "auto": bf16 where the CPU has bf16 instructions, by its flags.
    for flags, dtype in [
        (["avx2", "avx512f", "avx512_bf16", "avx512_vnni"], torch.bfloat16),  # this dev machine
        (["avx2", "avx512f", "amx_tile", "amx_bf16"], torch.bfloat16),
        (["avx2", "avx512f", "avx512_vnni"], None),  # AVX-512 without bf16: emulated, slower
        (["avx2"], None),
        ([], None),
    ]:
        assert resolve_fast_cpu_dtype("auto", flags) is dtype, flags
    here = set(cpu_flags())
    native = bool({"avx512_bf16", "amx_bf16"} & here) or torch.cpu._is_amx_tile_supported()
    assert resolve_fast_cpu_dtype("auto") is (torch.bfloat16 if native else None)
    with pytest.raises(ValueError):
        resolve_fast_cpu_dtype("float16")


FAST_FP32 = ["MODEL.YOLACT.FAST_CPU_INFERENCE", True, "MODEL.YOLACT.FAST_CPU_DTYPE", "float32"]


def test_fast_path_matches_default_and_leaves_the_model_untouched():
    reference = get_model("yolact_R_50_FPN_550.yaml")
    fast = get_model("yolact_R_50_FPN_550.yaml", FAST_FP32)
    state = {k: v.clone() for k, v in fast.state_dict().items()}
    x = torch.randn(1, 3, 550, 550, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = reference.predict(x), fast.predict(x)
    for key in ["class_logits", "box_deltas", "coefficients", "prototypes"]:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-3, atol=1e-3)
    # The fast path ran a BatchNorm-free copy, not the model's own backbone ...
    calls, ran = [], []
    fast.backbone.register_forward_hook(lambda *_: calls.append("own"))
    reference.backbone.register_forward_hook(lambda *_: calls.append("reference"))
    every_module = nn.modules.module.register_module_forward_hook(
        lambda module, *_: ran.append(type(module))
    )
    try:
        with torch.no_grad():
            fast.predict(x)
    finally:
        every_module.remove()
    assert calls == [] and len(ran) > 100
    assert not any(issubclass(t, nn.modules.batchnorm._BatchNorm) for t in ran)
    assert any(isinstance(m, nn.BatchNorm2d) for m in fast.backbone.modules())
    assert fast.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in fast.state_dict().items())
    # ... while training mode and the default path use the model's own modules.
    with torch.no_grad():
        reference.predict(x)
        fast.train().predict(x)
    assert calls == ["reference", "own"]


def test_inference_copy_follows_weight_changes():
    model = nn.Sequential(Conv2d(3, 4, 3, padding=1, norm=nn.BatchNorm2d(4))).eval()
    cache = InferenceCopy()
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        first = cache.get(model)[0]
        assert cache.get(model)[0] is first  # reused while the weights are unchanged
        model[0].weight.mul_(2)  # in place, as an optimizer step or load_state_dict
        second = cache.get(model)[0]
        assert second is not first
        torch.testing.assert_close(second(x), model(x), rtol=1e-5, atol=1e-5)
        model.load_state_dict({k: torch.zeros_like(v) for k, v in model.state_dict().items()})
        torch.testing.assert_close(cache.get(model)[0](x), model(x))


def test_bf16_copy_stores_conv_parameters_in_bf16_without_changing_results():
    model = get_model("yolact_R_50_FPN_550.yaml").backbone
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    x = x.contiguous(memory_format=torch.channels_last)
    (cast,) = InferenceCopy(torch.bfloat16).get(model)
    (plain,) = InferenceCopy(None).get(model)
    assert cast.fpn_output3.weight.dtype == torch.bfloat16
    assert plain.fpn_output3.weight.dtype == torch.float32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = cast(x), plain(x)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_compiled_fast_path_matches_the_eager_one():
    """MODEL.YOLACT.FAST_CPU_COMPILE: the network compiled (inductor, frozen weights) gives the
    eager fast path's outputs to float rounding, and the model's own modules stay untouched."""
    config = "demo/yolact_R_18_synthetic.yaml"
    eager = get_model(config, FAST_FP32)
    compiled = get_model(config, FAST_FP32 + ["MODEL.YOLACT.FAST_CPU_COMPILE", True])
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, got = eager.predict(x), compiled.predict(x)
    backbone = compiled._inference_copy.get(
        compiled.backbone, compiled.head, compiled.mask_branch.protonet
    )[0]
    assert isinstance(backbone, CompiledModule) and not backbone._failed
    for key in ["class_logits", "box_deltas", "coefficients", "prototypes"]:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, CompiledModule) for m in compiled.modules())


def test_compiled_module_falls_back_to_eager(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: broken)
    module = nn.Conv2d(3, 2, 1).eval()
    wrapped = CompiledModule(module)
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad(), caplog.at_level("WARNING", logger=fast_cpu.__name__):
        torch.testing.assert_close(wrapped(x), module(x))
        torch.testing.assert_close(wrapped(x), module(x))
    assert wrapped._failed
    assert caplog.text.count("torch.compile of Conv2d failed, running it eagerly") == 1
    assert "no C++ compiler found" in caplog.text and "more detail" not in caplog.text
