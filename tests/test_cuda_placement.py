# Copyright (c) yolact_d2 contributors.
"""
Device placement on CUDA, proven on machines without a GPU (see tests/simulated_cuda.py):
inference of every architecture, a training step (plain and AMP), the NMS functions and the
exporter run with all model tensors on (simulated or fake) CUDA, and a CPU tensor planted in
the path is caught. Values computed on simulated CUDA must equal the CPU model's exactly (the
same CPU kernels compute them), which also shows that the simulation changes nothing.

The tests that need a real GPU carry the ``cuda`` marker (``pytest -m cuda``, what
dev/gpu_check.sh runs) and are skipped here.
"""

import copy
import importlib
import importlib.util
import numpy as np
import os
from unittest import mock

import pytest
import torch
from torch._subclasses import fake_tensor
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from yolact_d2.data import YolactDatasetMapper
from yolact_d2.deploy.export import export_program
from yolact_d2.engine import cli
from yolact_d2.engine.cli import load_config
from yolact_d2.engine.optimizer import build_yolact_optimizer
from yolact_d2.engine.trainer import YolactAMPTrainer, YolactSimpleTrainer, YolactTrainer
from yolact_d2.layers import build_nms
from yolact_d2.layers.nms import fast_nms_implementation

from common import CONFIG_DIR, calibrate_detections, get_config, get_model, load_script
from pinned_outputs import TRAIN_OPTS, photo
from simulated_cuda import (
    DeviceMismatchError,
    SimulatedCuda,
    SimulatedCudaTensor,
    all_on_cuda,
    cpu_values,
    to_fake_cuda,
    to_simulated_cuda,
)

# torch 2.14's error for CUDA meeting CPU under fake tensors (a RuntimeError in torch 2.11).
FAKE_DEVICE_MISMATCH = getattr(fake_tensor, "FakeTensorDeviceMismatchError", RuntimeError)
# One config per backbone family: ResNet-50, ResNet-101, DarkNet-53, YOLACT++ (deformable).
ARCHITECTURES = [
    "yolact_R_50_FPN_550.yaml",
    "yolact_R_101_FPN_550.yaml",
    "yolact_DarkNet53_FPN_550.yaml",
    "yolact_plus_R_50_FPN_550.yaml",
]
ALL_CONFIGS = ARCHITECTURES + [
    "yolact_R_101_FPN_400.yaml",
    "yolact_R_101_FPN_700.yaml",
    "yolact_plus_R_101_FPN_550.yaml",
]


def _inputs(images):
    """Detectron2 inputs of (H, W, 3) RGB uint8 arrays, on the CPU (the model moves them)."""
    return [
        {"image": torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))), "height": h,
         "width": w}
        for im in images
        for h, w in [im.shape[:2]]
    ]  # fmt: skip


def _images():
    rgb = photo()[:, :, ::-1]
    return [np.ascontiguousarray(rgb), np.ascontiguousarray(rgb[:200, 50:390])]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def calibrated(request):
    """(name, CPU model detecting like a trained one) for each architecture."""
    model = get_model(request.param)
    calibrate_detections(model, _images())
    return request.param, model


def _fields(instances):
    return {k: cpu_values(v.tensor if hasattr(v, "tensor") else v)
            for k, v in instances.get_fields().items()}  # fmt: skip


# ---------------------------------------------------------------------------- the mechanism
def test_simulated_tensors_follow_cudas_device_rules():
    with SimulatedCuda():
        x = torch.arange(6.0, device="cuda")
        assert isinstance(x, SimulatedCudaTensor) and x.device == torch.device("cuda", 0)
        with pytest.raises(DeviceMismatchError, match="cpu, cuda:0"):
            x + torch.ones(6)
        assert (x + torch.tensor(1.0)).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # CPU scalar
        assert x[torch.tensor([1, 3])].tolist() == [1.0, 3.0]  # CPU indices are moved
        with pytest.raises(TypeError, match="cuda:0 device type tensor to numpy"):
            x.numpy()
        host = x.cpu()
        assert type(host) is torch.Tensor and host.numpy().tolist() == x.tolist()
        moved = host.to(x.device)
        assert isinstance(moved, SimulatedCudaTensor)
        moved.add_(1)  # a host-to-device copy does not share memory with the host tensor
        assert host.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        assert isinstance(torch.zeros(2).cuda(), SimulatedCudaTensor)
        assert torch.cuda.is_available()


def test_a_planted_cpu_tensor_is_caught(calibrated):
    """The classic CUDA bug (priors made on the CPU) fails here as it would on a GPU."""
    name, model = calibrated
    model = to_simulated_cuda(copy.deepcopy(model))
    generator = model.prior_generator
    with SimulatedCuda(), mock.patch.object(
        type(generator),
        "__call__",
        lambda self, sizes, device, input_size=None: torch.zeros(19248, 4),
    ):
        with pytest.raises(DeviceMismatchError, match="cpu, cuda:0"):
            model(_inputs(_images()[:1]))


def test_a_planted_cpu_tensor_is_caught_by_fake_tensors():
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    model = to_fake_cuda(get_model("yolact_R_50_FPN_550.yaml"), mode)
    with mode:
        images = torch.empty((1, 3, 550, 550), device="cuda")
        assert model.predict(images)["prototypes"].device.type == "cuda"
        cpu_images = torch.empty((1, 3, 550, 550))  # an input left on the CPU
        with pytest.raises(FAKE_DEVICE_MISMATCH, match="devices|device"):
            model.normalize(cpu_images)
        with pytest.raises(RuntimeError, match="device"):
            model.predict(cpu_images)


# ---------------------------------------------------------------------------- inference
@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_network_of_every_config_on_fake_cuda(name):
    """The network of all seven configs on fake CUDA tensors (no computation, no data)."""
    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=False)
    model = to_fake_cuda(get_model(name), mode)
    size = model.input_size
    with mode:
        outputs = model.predict(model.normalize(torch.empty((2, 3, size, size), device="cuda")))
    devices = {k: v.device.type for k, v in outputs.items() if isinstance(v, torch.Tensor)}
    assert set(devices.values()) == {"cuda"}, devices
    assert (
        outputs["class_logits"].shape[:2]
        == outputs["box_deltas"].shape[:2]
        == (
            2,
            outputs["priors"].shape[0],
        )
    )


def test_inference_on_cuda_matches_cpu(calibrated):
    """One image and a batch of two, from Detectron2 inputs to Instances: everything on CUDA,
    the same detections as the CPU model, value for value."""
    name, model = calibrated
    images = _images()
    with torch.no_grad():
        expected = [r["instances"] for r in model(_inputs(images))]
    cuda_model = to_simulated_cuda(copy.deepcopy(model))
    with SimulatedCuda(), torch.no_grad():
        single = cuda_model(_inputs(images[:1]))
        batch = cuda_model(_inputs(images))
    for got, want in zip([single[0]["instances"]] + [r["instances"] for r in batch],
                         [expected[0]] + expected):  # fmt: skip
        assert len(want) > 0, name
        assert all_on_cuda(got) == [], (name, all_on_cuda(got))
        assert got.image_size == want.image_size
        got_fields, want_fields = _fields(got), _fields(want)
        assert sorted(got_fields) == sorted(want_fields)
        for key, value in want_fields.items():
            assert torch.equal(got_fields[key], value), (name, key)


@pytest.mark.parametrize("nms_type", ["fast", "cross_class", "traditional", "batched"])
def test_nms_on_cuda_matches_cpu(nms_type):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 0.8
    boxes = torch.cat([xy, xy + 0.05 + torch.rand(300, 2, generator=g) * 0.2], dim=1)
    scores = torch.rand(20, 300, generator=g) ** 3
    nms = build_nms(nms_type, top_k=50, max_num_detections=100)
    expected = nms(boxes, scores)
    assert len(expected[0]) > 10
    functions = [nms]
    if nms_type == "fast":  # the custom op's Python implementation, step by step on CUDA
        functions.append(lambda b, s: fast_nms_implementation(b, s, 0.5, 50, 100))
    for function in functions:
        with SimulatedCuda():
            got = function(boxes.cuda(), scores.cuda())
        for a, b in zip(got, expected):
            assert isinstance(a, SimulatedCudaTensor)
            assert torch.equal(cpu_values(a), b)


def test_nms_with_no_candidates_on_cuda():
    with SimulatedCuda():
        boxes, scores = torch.zeros((0, 4), device="cuda"), torch.zeros((80, 0), device="cuda")
        for nms_type in ("fast", "cross_class", "traditional", "batched"):
            outputs = build_nms(nms_type)(boxes, scores)
            assert [len(o) for o in outputs] == [0, 0, 0], nms_type
            assert all(isinstance(o, SimulatedCudaTensor) for o in outputs), nms_type


def test_export_traces_a_cuda_model():
    """torch.export of the whole pipeline from a model on (fake) CUDA: the sample image is put
    on the model's device, and every tensor of the program lives there."""
    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
    model = to_fake_cuda(get_model("yolact_R_50_FPN_550.yaml"), mode)
    with mode:
        program = export_program(model)
    signature = program.graph_signature
    nodes = {n.name: n for n in program.graph.nodes}
    image = nodes[signature.user_inputs[0]].meta["val"]
    assert image.dtype == torch.uint8 and image.device.type == "cuda"
    weights = list(signature.inputs_to_parameters) + list(signature.inputs_to_buffers)
    assert len(weights) > 300
    assert {nodes[name].meta["val"].device.type for name in weights} == {"cuda"}
    # (The priors are constants made on the CPU and moved in the graph, as in eager mode.)
    outputs = [nodes[name].meta["val"] for name in signature.user_outputs]
    assert len(outputs) == 4 and {t.device.type for t in outputs} == {"cuda"}


# ---------------------------------------------------------------------------- training
def _training_setup(config, opts=()):
    cfg = get_config(config, TRAIN_OPTS + list(opts))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = [YolactDatasetMapper(cfg, True)(r) for r in DatasetCatalog.get("tiny_coco_train")[:2]]
    return cfg, model, batch


@pytest.mark.parametrize("config", ["yolact_R_50_FPN_550.yaml", "yolact_plus_R_50_FPN_550.yaml"])
def test_training_step_on_cuda(config):
    """The mapper's CPU output (moved by the model, as Detectron2's models do), forward, every
    loss term, backward and the optimizer step, with the model on CUDA: the losses equal the
    CPU model's, and gradients, updated weights and optimizer state stay on CUDA."""
    cfg, model, batch = _training_setup(config)
    cpu_model = copy.deepcopy(model)
    with torch.no_grad():
        expected = {k: float(v) for k, v in cpu_model(batch).items()}
    cuda_model = to_simulated_cuda(model)
    before = {n: cpu_values(p).clone() for n, p in cuda_model.named_parameters()}
    optimizer = build_yolact_optimizer(cfg, cuda_model)
    with SimulatedCuda(), EventStorage(0) as storage:
        trainer = YolactSimpleTrainer(cuda_model, [batch], optimizer)
        trainer.run_step()
    losses = {k: storage.history(k).latest() for k in expected}
    assert losses == pytest.approx(expected, rel=1e-6)
    trained = [p for p in cuda_model.parameters() if p.requires_grad]
    assert all(isinstance(p, SimulatedCudaTensor) for p in cuda_model.parameters())
    assert all(isinstance(p.grad, SimulatedCudaTensor) for p in trained if p.grad is not None)
    changed = [
        n for n, p in cuda_model.named_parameters() if not torch.equal(before[n], cpu_values(p))
    ]
    assert len(changed) == len(trained)
    momenta = [s["momentum_buffer"] for s in optimizer.state.values()]
    assert momenta and all(isinstance(m, SimulatedCudaTensor) for m in momenta)


def test_amp_training_step_on_cuda():
    """SOLVER.AMP.ENABLED's step: CUDA autocast (float16 activations), the gradient scaler's
    scaled backward, unscale, clipping and step; the scaler's state on CUDA."""
    # (128 x 128: float16 convolutions are slow on CPUs.)
    cfg, model, batch = _training_setup(
        "yolact_R_50_FPN_550.yaml", ["MODEL.YOLACT.INPUT_SIZE", 128]
    )
    model = to_simulated_cuda(model)
    optimizer = build_yolact_optimizer(cfg, model)
    dtypes = []
    model.backbone.register_forward_hook(lambda m, i, o: dtypes.append(o["p3"].dtype))
    before = {n: cpu_values(p).clone() for n, p in model.named_parameters()}
    with SimulatedCuda(), EventStorage(0) as storage:
        trainer = YolactAMPTrainer(model, [batch], optimizer, max_grad_norm=10.0)
        # The default initial scale (2 ** 16) overflows the float16 gradients of a random
        # model; the first steps would then be skipped by the scaler, as on a GPU.
        trainer.grad_scaler = torch.amp.GradScaler("cuda", init_scale=1.0)
        trainer.run_step()
        scale = trainer.grad_scaler._scale
    assert dtypes == [torch.float16]
    assert np.isfinite(storage.history("total_loss").latest())
    assert isinstance(scale, SimulatedCudaTensor)
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], cpu_values(p))}
    if scale.item() < 1.0:
        # The scaler found an overflow (CPU autocast's float16 operator lists differ between
        # torch releases: 2.11's overflow here, 2.14's do not): the step was skipped.
        assert moved == set()
        return
    assert scale.item() == 1.0 and storage.history("grad_norm").latest() > 0
    # Every parameter with a non-zero gradient moved (unscaled float16 gradients of P7 underflow
    # to exactly zero at this size: its weight moves by weight decay alone, its zero bias not).
    with_gradient = {
        n for n, p in model.named_parameters() if p.grad is not None and bool(p.grad.any())
    }
    assert with_gradient <= moved and len(with_gradient) >= 190


# ------------------------------------------------------------------ what CUDA users expect
def test_ddp_arguments_on_cuda_and_cpu():
    """Several processes: CUDA models get Detectron2's DDP wrapping (device_ids=[local rank]),
    CPU models device_ids=None; PyTorch's SyncBN is allowed on CUDA only."""
    calls = []

    class RecordingDDP(torch.nn.Module):
        def __init__(self, module, **kwargs):
            super().__init__()
            calls.append(kwargs)
            self.module = module

    for device, norm in (("cuda", "SyncBN"), ("cpu", "BN"), ("cuda", "BN")):
        cfg = get_config("yolact_R_50_FPN_550.yaml", ["MODEL.RESNETS.NORM", norm])
        model = torch.nn.Linear(2, 2)
        if device == "cuda":
            to_simulated_cuda(model)
        with mock.patch("detectron2.engine.defaults.DistributedDataParallel", RecordingDDP), \
                mock.patch("detectron2.utils.comm.get_world_size", return_value=2), \
                mock.patch("detectron2.utils.comm.get_local_rank", return_value=1):  # fmt: skip
            wrapped = YolactTrainer.build_ddp_model(cfg, model)
        assert isinstance(wrapped, RecordingDDP)
    assert [c["device_ids"] for c in calls] == [[1], None, [1]]
    assert all(c["broadcast_buffers"] is False for c in calls)


def test_detectron2_launch_picks_nccl_on_cuda_and_gloo_on_cpu():
    """train_net.py's launch (Detectron2's): NCCL with one process per GPU where CUDA is
    available, gloo on CPU processes; stopped at the process-group creation."""
    launch_module = importlib.import_module("detectron2.engine.launch")

    class Stop(Exception):
        pass

    for has_gpu, backend in ((True, "NCCL"), (False, "GLOO")):
        seen = {}

        def init_process_group(**kwargs):
            seen.update(kwargs)
            raise Stop

        with mock.patch.object(launch_module.dist, "init_process_group", init_process_group), \
                mock.patch("torch.cuda.is_available", return_value=has_gpu), \
                mock.patch("torch.cuda.device_count", return_value=8):  # fmt: skip
            with pytest.raises(Stop):
                launch_module._distributed_worker(1, print, 4, 2, 1, "tcp://127.0.0.1:1", ())
        assert seen["backend"] == backend
        assert (seen["world_size"], seen["rank"]) == (4, 3)


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_tools_fall_back_to_cpu_without_cuda(device, tmp_path):
    """MODEL.DEVICE cuda on a machine without CUDA: the one config loader (the tools' and
    train_net.py's) runs on the CPU and says so once; tools that must not fall back refuse."""
    config = os.path.join(CONFIG_DIR, "yolact_R_50_FPN_550.yaml")
    opts = ["MODEL.DEVICE", device, "MODEL.WEIGHTS", "", "OUTPUT_DIR", str(tmp_path)]
    message = f"MODEL.DEVICE '{device}': CUDA is not available, running on CPU."
    train_net = _load_train_net()
    args = train_net.get_parser().parse_args(["--config-file", config] + opts)
    with mock.patch("torch.cuda.is_available", return_value=False):
        for load in (lambda: load_config(config, opts), lambda: train_net.setup(args)):
            with mock.patch.object(cli.logger, "warning") as warning:
                assert load().MODEL.DEVICE == "cpu"
            warning.assert_called_once_with(message)
        assert load_config(config, opts, cpu_fallback=False).MODEL.DEVICE == device


def _load_train_net():
    return load_script("train_net.py")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_inference_on_a_real_gpu_matches_cpu():
    """On a GPU: the same detections as the CPU (classes, scores to 1e-3, boxes to 1 px) and
    masks that agree (IoU >= 0.98 per detection)."""
    model = get_model("yolact_R_50_FPN_550.yaml")
    calibrate_detections(model, _images())
    with torch.no_grad():
        expected = model(_inputs(_images()))
        gpu = copy.deepcopy(model).cuda()
        got = gpu(_inputs(_images()))
    for a, b in zip(got, expected):
        a, b = a["instances"].to("cpu"), b["instances"]
        assert len(a) == len(b) > 0
        assert torch.equal(a.pred_classes, b.pred_classes)
        torch.testing.assert_close(a.scores, b.scores, atol=1e-3, rtol=0)
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1.0, rtol=0)
        inter = (a.pred_masks & b.pred_masks).sum((1, 2)).float()
        union = (a.pred_masks | b.pred_masks).sum((1, 2)).float().clamp(min=1)
        assert float((inter / union).min()) >= 0.98
