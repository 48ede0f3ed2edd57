"""ONNX export (:mod:`wavecl.model.onnx_export`) and the ONNX Runtime path of the predictor, against eager PyTorch.

One export of the tiny model (every path carrying a signal) serves the module; it takes minutes on one
thread, hence ``slow`` on the tests that need it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from support import perturbed_model, run_cli

from wavecl.app import AppConfig
from wavecl.data.synthetic import sample_synthetic_video
from wavecl.inference.onnx_runtime import OnnxNetwork
from wavecl.inference.predictor import VideoPredictor
from wavecl.inference_settings import InferenceSettings
from wavecl.model.heads import dynamic_mask_logits
from wavecl.model.linear import onednn_linears
from wavecl.model.onnx_export import (
    ONNX_MANIFEST,
    ONNX_OPSET,
    PART_FILES,
    _export,
    export_onnx,
    min_frame_side,
    quantize_int8,
    trace_frame_side,
)
from wavecl.model.wavecl import WaveCL

pytestmark = pytest.mark.usefixtures("single_thread")
onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'wavecl[onnx]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'wavecl[onnx]'")

SENTENCES = ["the red circle moving to the left", "a blue square", "the small green triangle at the top"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model(tiny_config) -> WaveCL:
    return perturbed_model(tiny_config).eval()


@pytest.fixture(scope="module")
def onnx_dir(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx"))


def test_min_frame_side_of_a_config_with_the_published_depths(tiny_config):
    """``backbone_depths: null`` (the full-size recipes) takes the variant's depths: still four stages."""
    model = WaveCL(dataclasses.replace(tiny_config, backbone_depths=None))
    assert len(model.backbone.body.features) == 7  # four stages, three patch mergings
    assert min_frame_side(model) == 33  # the last of four stages keeps 2 tokens: 4 * 2**3 + 1
    assert trace_frame_side(model) == 225  # window 7: the last stage 8 tokens, 8 -> 15 -> 29 -> 57 -> 4 * 56 + 1


def window_outputs(directory, model, frames: int, height: int, width: int):
    """The ONNX Runtime outputs of ``directory`` for a random clip (seeded by ``frames``) and :data:`SENTENCES`."""
    network = OnnxNetwork(directory, model.tokenizer, model.text_encoder, threads=1)
    clip = torch.randn(frames, 1, 3, height, width, generator=torch.Generator().manual_seed(frames))
    pad_mask = torch.zeros(frames, 1, height, width, dtype=torch.bool)
    sizes = torch.tensor([[height, width]] * len(SENTENCES))
    return network.segment(network.encode_video(clip, pad_mask), network.encode_sentences(SENTENCES, CPU), sizes)


@pytest.mark.slow
def test_parts_and_manifest(onnx_dir, model):
    manifest = json.loads((onnx_dir / ONNX_MANIFEST).read_text())
    assert manifest["min_frame_side"] == min_frame_side(model) == 33  # last stage 2 tokens: 33 / 4 / 2**3 rounded up
    assert manifest["max_frames"] == model.config.backbone_window_size[0]
    for name in PART_FILES.values():
        graph = onnx.load(str(onnx_dir / name))
        onnx.checker.check_model(graph)
        assert max(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")) == ONNX_OPSET
    video = onnx.load(str(onnx_dir / PART_FILES["video"]))
    frames = video.graph.input[0].type.tensor_type.shape.dim
    assert [bool(dim.dim_param) for dim in frames] == [True, False, False, True, True]  # T, H, W dynamic


@pytest.mark.slow
@pytest.mark.parametrize(("frames", "height", "width"), [(2, 64, 96), (4, 232, 300)])
def test_onnx_runtime_equals_eager(onnx_dir, model, frames, height, width):
    """Two frame sizes and window lengths, three sentences sharing one video pass. At 64x96 (the demo's
    size) the last two Video-Swin stages are smaller than the 7x7 window, which shrinks there; at
    232x300 no stage is; the export was traced at 225x225."""
    network = OnnxNetwork(onnx_dir, model.tokenizer, model.text_encoder, threads=1)
    clip = torch.randn(frames, 1, 3, height, width, generator=torch.Generator().manual_seed(frames))
    pad_mask = torch.zeros(frames, 1, height, width, dtype=torch.bool)
    pad_mask[..., height - 9 :, :] = True  # a padded band, as a batch's smaller clip has
    sizes = torch.tensor([[height - 9, width]] * len(SENTENCES))
    visual = network.encode_video(clip, pad_mask)
    ran = network.segment(visual, network.encode_sentences(SENTENCES, CPU), sizes)
    with torch.inference_mode():
        eager = model.segment(
            model.encode_video(clip, pad_mask),
            model.encode_sentences(SENTENCES, CPU),
            sizes,
            clip_index=torch.zeros(len(SENTENCES), dtype=torch.long),
        )
    stride4 = (-(-height // 4), -(-width // 4))
    assert ran.pred_masks.shape == eager.pred_masks.shape == (frames, 3, model.config.num_queries, *stride4)
    for name in ("pred_masks", "pred_cls", "pred_boxes", "video_queries", "text_sentence_feature"):
        expected, actual = getattr(eager, name), getattr(ran, name)
        assert (actual - expected).abs().max() <= 1e-4 * expected.abs().max(), name
    agree = ((ran.pred_masks > 0) == (eager.pred_masks > 0)).float().mean()
    assert agree >= 0.999
    assert 0.02 < (eager.pred_masks > 0).float().mean() < 0.98  # masks neither empty nor full


@pytest.mark.slow
def test_predictor_on_onnx_runtime(onnx_dir, model):
    """VideoPredictor(runtime="onnxruntime") gives the eager predictor's masks (a 7-frame video, windows of 4)."""
    video, _ = sample_synthetic_video(seed=5, split="test", index=0, num_frames=7, size=(240, 320)).render()
    settings = {"short_size": 232, "max_size": 320, "window": 4, "progress": False}
    eager = VideoPredictor(model, **settings)(video, SENTENCES[:2])
    ran = VideoPredictor(model, runtime="onnxruntime", onnx_dir=onnx_dir, **settings)(video, SENTENCES[:2])
    assert ran.shape == eager.shape == (2, 7, 240, 320)
    assert (ran == eager).float().mean() >= 0.999


@pytest.mark.slow
def test_predictor_refuses_what_the_export_cannot_run(onnx_dir, model):
    with pytest.raises(ValueError, match="amp='off'"):
        VideoPredictor(model, runtime="onnxruntime", onnx_dir=onnx_dir, amp="bf16")
    small = VideoPredictor(model, short_size=24, max_size=96, runtime="onnxruntime", onnx_dir=onnx_dir, progress=False)
    frames = np.zeros((2, 48, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="frames of 33 to 4096 px per side after the resize, got 24x32"):
        small(frames, "a dog")


def test_grouped_convs_equal_the_exported_matmuls(monkeypatch):
    """The dynamic mask head's export form (batched matmuls) computes its grouped 1x1 convolutions."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 8, 5, 7, generator=generator)
    params = torch.randn(2, 3, 4, 169, generator=generator)
    centres = torch.rand(2, 3, 4, 2, generator=generator)
    sizes = torch.tensor([[20, 28], [18, 25]])
    convs = dynamic_mask_logits(features, params, centres, sizes)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    monkeypatch.setattr(torch.nn.functional, "conv2d", None)  # a grouped conv would fail: it must not run
    matmuls = dynamic_mask_logits(features, params, centres, sizes)
    torch.testing.assert_close(matmuls, convs, rtol=1e-5, atol=1e-5)


def test_linears_of_many_axes_export_as_one_gemm(tmp_path):
    """The network's linear layers (:class:`~wavecl.model.linear.Linear`) of a 4-D input are written as one
    ``Gemm`` each on the flattened input (the bias added inside), with dynamic leading axes, and ONNX
    Runtime computes the module's values."""
    torch.manual_seed(0)
    module = onednn_linears(
        torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4, bias=False))
    ).eval()
    path = tmp_path / "linears.onnx"
    dims = {0: torch.export.Dim("a", min=2), 1: torch.export.Dim("b", min=2)}
    _export(module, (torch.randn(2, 3, 5, 8),), path, ["x"], ["y"], (dims,))
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("Gemm") == 2 and "MatMul" not in ops and "Add" not in ops, ops
    x = torch.randn(4, 6, 5, 8)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), module(x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cli_export_onnx_and_predict(model, tmp_path, capsys):
    """``wavecl export --onnx`` writes OUT/onnx beside the pretrained files; ``predict --runtime onnxruntime``
    uses it and writes the eager predictor's masks."""
    model.save_pretrained(tmp_path / "run", InferenceSettings(short_size=232, max_size=320, window=3))
    code, out, _ = run_cli(["export", str(tmp_path / "run"), str(tmp_path / "out"), "--onnx"], capsys)
    assert code == 0 and "ONNX parts" in out
    assert (tmp_path / "out" / "onnx" / ONNX_MANIFEST).is_file() and (tmp_path / "out" / "model.safetensors").is_file()
    video, _ = sample_synthetic_video(seed=6, split="test", index=0, num_frames=4, size=(240, 320)).render()
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for index, frame in enumerate(video):
        Image.fromarray(frame).save(frames_dir / f"{index:05d}.png")
    outputs = {}
    for runtime in ("torch", "onnxruntime"):
        argv = ["predict", str(frames_dir), "--checkpoint", str(tmp_path / "out"), "--text", "a blue square"]
        code, _, _ = run_cli([*argv, "--output", str(tmp_path / runtime), "--runtime", runtime], capsys)
        assert code == 0
        masks = sorted((tmp_path / runtime / "masks").rglob("*.png"))
        outputs[runtime] = np.stack([np.array(Image.open(path)) > 0 for path in masks])
    assert outputs["torch"].shape == outputs["onnxruntime"].shape == (4, 240, 320)
    assert (outputs["torch"] == outputs["onnxruntime"]).mean() >= 0.999


@pytest.mark.slow
def test_int8_parts_run_and_mostly_agree(onnx_dir, model, tmp_path):
    """Dynamic int8 quantization of the parts: smaller files, the same output shapes, most mask pixels kept."""
    int8_dir = shutil.copytree(onnx_dir, tmp_path / "int8")
    for name in PART_FILES.values():
        quantize_int8(int8_dir / name)
        assert (int8_dir / name).stat().st_size < 0.8 * (onnx_dir / name).stat().st_size
    graph = onnx.load(str(int8_dir / PART_FILES["segment"]))
    assert any(node.op_type in ("DynamicQuantizeLinear", "MatMulInteger") for node in graph.graph.node)
    assert not any(node.op_type == "ConvInteger" for node in graph.graph.node)  # convolutions stay float32
    float32 = window_outputs(onnx_dir, model, 3, 240, 304)
    int8 = window_outputs(int8_dir, model, 3, 240, 304)
    assert int8.pred_masks.shape == float32.pred_masks.shape
    assert torch.isfinite(int8.pred_masks).all()
    assert not torch.equal(int8.pred_masks, float32.pred_masks)
    assert ((int8.pred_masks > 0) == (float32.pred_masks > 0)).float().mean() >= 0.8


def test_int8_needs_onnx_and_serve_needs_the_parts(tmp_path, capsys):
    code, _, err = run_cli(["export", str(tmp_path / "run"), str(tmp_path / "out"), "--int8"], capsys)
    assert code != 0 and "--int8 quantizes the ONNX export: give --onnx too" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="AppConfig.onnx_dir is needed with runtime='onnxruntime'"):
        AppConfig(InferenceSettings(runtime="onnxruntime"))
