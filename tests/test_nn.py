"""The networks: DSSA and STAR-DSSA attention, DSSAU-Net configs, and ONNX export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the network tests need torch (pip install -e '.[dev]')")

from ipp_seg.nn.attention import (  # noqa: E402
    DualSparseSelectionAttention, StarDSSA, chebyshev_distance, gather_regions, literal_topk_attention,
    to_regions, token_topk_attention)
from ipp_seg.nn.configs import get_config, list_configs  # noqa: E402
from ipp_seg.nn.dssau_net import (  # noqa: E402
    PyramidPooling, build_network, count_macs, count_parameters, region_max_pool)


def test_channel_layer_norm_equals_layer_norm_over_permuted_channels():
    from ipp_seg.nn.dssau_net import LayerNorm2d

    torch.manual_seed(0)
    norm = LayerNorm2d(24)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 24, 7, 9) * 3 + 1
    expected = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (24,), norm.weight, norm.bias,
                                              norm.eps).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


def test_gather_regions_copies_each_routed_region_per_head():
    torch.manual_seed(0)
    b, nh, r, t, d, k1 = 2, 3, 16, 4, 5, 3
    tokens = torch.randn(b, nh, r, t, d)
    region_index = torch.randint(0, r, (b, r, k1))
    gathered = gather_regions(tokens, region_index)
    assert gathered.shape == (b, nh, r, k1 * t, d)
    for bi in range(b):
        for query_region in range(r):
            expected = torch.cat([tokens[bi, :, int(region_index[bi, query_region, j])] for j in range(k1)], dim=1)
            torch.testing.assert_close(gathered[bi, :, query_region], expected, rtol=0, atol=0)


@pytest.mark.parametrize("keep", [1, 8, 37])
def test_threshold_topk_equals_literal_gather(keep):
    torch.manual_seed(keep)
    q = torch.randn(2, 3, 5, 16, 32, dtype=torch.float64)
    k = torch.randn(2, 3, 5, 64, 32, dtype=torch.float64)
    v = torch.randn(2, 3, 5, 64, 32, dtype=torch.float64)
    fast = token_topk_attention(q, k, v, keep)
    reference = literal_topk_attention(q, k, v, keep)
    torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-10)


def test_topk_keeps_only_k_scores():
    # One query, values = identity: the output weights show which keys were kept.
    q = torch.tensor([[[1.0, 0.0]]])
    k = torch.tensor([[[3.0, 0.0], [1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]]])
    v = torch.eye(4)[None]
    out = token_topk_attention(q, k, v, keep=2)[0, 0]
    assert out[1] == 0 and out[3] == 0
    assert out[0] > out[2] > 0
    assert math.isclose(float(out.sum()), 1.0, rel_tol=1e-6)


def test_region_layout_holds_contiguous_windows():
    x = torch.randn(2, 6, 16, 24)
    r = to_regions(x, 4)
    assert r.shape == (2, 16, 4 * 6, 6)
    # Region (row i, column j) holds the 4x6 window of the map at (4i, 6j), channels last.
    for i in range(4):
        for j in range(4):
            window = x[:, :, 4 * i:4 * i + 4, 6 * j:6 * j + 6].reshape(2, 6, -1).transpose(1, 2)
            torch.testing.assert_close(r[:, 4 * i + j], window, rtol=0, atol=0)


@pytest.mark.parametrize("cls", [DualSparseSelectionAttention, StarDSSA])
@pytest.mark.parametrize("size", [(32, 32), (19, 27)])
def test_attention_shape_in_equals_shape_out(cls, size):
    attn = cls(64, region_topk=4, regions_per_side=8)
    x = torch.randn(2, 64, *size)
    y = attn(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_dssa_routing_has_no_gradient_but_attention_does():
    attn = DualSparseSelectionAttention(32, region_topk=2, regions_per_side=4)
    x = torch.randn(1, 32, 16, 16, requires_grad=True)
    attn(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attn.parameters())


def test_star_dssa_every_parameter_learns():
    torch.manual_seed(0)
    attn = StarDSSA(64, region_topk=4, regions_per_side=4)
    x = torch.randn(2, 64, 16, 16)
    target = torch.randn(2, 64, 16, 16)
    loss = torch.nn.functional.mse_loss(attn(x), target)
    loss.backward()
    names = dict(attn.named_parameters())
    assert {"mix_logit", "routing_logit_scale"} <= set(names)
    assert any(n.startswith("saliency.") for n in names)
    for name, p in names.items():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, f"{name} has a zero gradient"
    assert 0 < float(attn.topology_weight) < 1


def test_chebyshev_distance():
    d = chebyshev_distance(3)
    assert d.shape == (9, 9)
    assert d[0, 0] == 0 and d[0, 4] == 1 and d[0, 8] == 2 and d[2, 6] == 2 and d[1, 7] == 2


@pytest.mark.parametrize("size", [(6, 6), (10, 10), (7, 11)])
def test_region_max_pool_equals_adaptive_pooling(size):
    x = torch.randn(2, 3, *size)
    for bins in (1, 2, 3, 6):
        torch.testing.assert_close(region_max_pool(x, bins), torch.nn.functional.adaptive_max_pool2d(x, bins))


def test_pyramid_pooling_shape():
    ppm = PyramidPooling(16, 8)
    assert ppm(torch.randn(2, 16, 10, 10)).shape == (2, 8, 10, 10)


def test_configs_registry():
    names = {c.name for c in list_configs()}
    assert {"dssau-net-paper", "star-dssau-net-paper", "dssau-net-s", "star-dssau-net-s"} <= names
    with pytest.raises(KeyError, match="known"):
        get_config("no-such-net")
    paper = get_config("dssau-net-paper")
    assert paper.dims == (96, 192, 384, 768) and paper.depths == (2, 2, 8, 2)
    assert paper.region_topk == (1, 4, 16, None) and paper.decoder_width == 64


@pytest.mark.parametrize("name", [c.name for c in list_configs()])
def test_config_figures_match_the_modules(name):
    """The parameter and MAC counts listed by `ipp-seg models` (stored as data) are the real ones."""
    config = get_config(name)
    model = build_network(config)
    assert count_parameters(model) == config.params
    if config.params < 5_000_000:  # the paper configs' MAC count is checked in the slow test below
        assert count_macs(model) == config.macs_256


@pytest.mark.slow
def test_paper_config_close_to_published_figures():
    model = build_network("dssau-net-paper")
    params, macs = count_parameters(model), count_macs(model)
    assert abs(params / 29.25e6 - 1) < 0.02
    assert abs(macs / 7.14e9 - 1) < 0.02
    assert macs == get_config("dssau-net-paper").macs_256


@pytest.mark.parametrize("name", ["dssau-net-s", "star-dssau-net-s"])
def test_small_networks_forward(name):
    model = build_network(name).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 1, 96, 128))
    assert y.shape == (2, 3, 96, 128)


@pytest.mark.parametrize("name", ["dssau-net-s", "star-dssau-net-s"])
def test_onnx_export_agrees_with_torch(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from ipp_seg.nn.export import export_onnx

    torch.manual_seed(0)
    model = build_network(name).eval()
    path = export_onnx(model, tmp_path / "m.onnx", (128, 128), {"kind": "percentile"})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["config_name"] == name
    assert json.loads(meta["input_size"]) == [128, 128]
    assert json.loads(meta["class_names"]) == ["background", "pubic_symphysis", "fetal_head"]
    assert "ipp_seg_version" in meta and json.loads(meta["normalisation"]) == {"kind": "percentile"}
    import onnx

    graph = onnx.load(str(path)).graph
    # Folded at export (the traced graph holds ~2,000 Constant nodes and ~400 Shape nodes for
    # dssau-net-s), and only standard operators remain.
    assert not [node for node in graph.node if node.op_type == "Constant"]
    assert {node.domain for node in graph.node} <= {""}
    for batch in (1, 4):
        x = torch.randn(batch, 1, 128, 128)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == expected.shape
        agreement = float((got.argmax(1) == expected.argmax(1)).mean())
        assert agreement >= 0.995, agreement


# Model-shipping tooling (12 s): `pytest -m slow` before shipping; CI's suite, near its 15 minutes, leaves it out.
@pytest.mark.slow
def test_fp16_weight_storage_halves_the_file_and_computes_the_same_labels(tmp_path):
    """Weights stored as float16 and cast back in the graph: half the bytes, the same network,
    small tensors (norm scales, epsilons) untouched, and the file says how it stores them."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from ipp_seg.nn.export import FP16_MIN_ELEMENTS, export_onnx

    torch.manual_seed(0)
    model = build_network("dssau-net-s").eval()
    with torch.no_grad():  # weights float16 can hold exactly: only the export-time folding rounds
        for p in model.parameters():
            p.copy_(p.half().float())
    full = export_onnx(model, tmp_path / "full.onnx", (128, 128), {})
    half = export_onnx(model, tmp_path / "half.onnx", (128, 128), {}, fp16_weights=True)
    assert 0.45 < half.stat().st_size / full.stat().st_size < 0.6
    proto = onnx.load(str(half))
    sizes = {i.name: (i.data_type, int(np.prod(i.dims))) for i in proto.graph.initializer}
    assert all(kind == onnx.TensorProto.FLOAT16 for kind, n in sizes.values() if n >= FP16_MIN_ELEMENTS)
    assert any(kind == onnx.TensorProto.FLOAT for kind, n in sizes.values() if n < FP16_MIN_ELEMENTS)
    casts = [node for node in proto.graph.node if node.op_type == "Cast" and node.input[0] in sizes]
    assert len(casts) == sum(kind == onnx.TensorProto.FLOAT16 for kind, _ in sizes.values())
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (full, half)]
    assert sessions[1].get_modelmeta().custom_metadata_map["weights_stored_as"] == "float16"
    assert "weights_stored_as" not in sessions[0].get_modelmeta().custom_metadata_map
    assert sessions[1].get_inputs()[0].type == sessions[1].get_outputs()[0].type == "tensor(float)"
    x = np.random.default_rng(1).standard_normal((2, 1, 128, 128)).astype(np.float32)
    a, b = (s.run(None, {"image": x})[0] for s in sessions)
    assert float((a.argmax(1) == b.argmax(1)).mean()) >= 0.995
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_fp16_storage_leaves_an_initializer_that_is_also_a_graph_input_alone():
    """Older IRs list initializers among the inputs (a default a caller may override with float32):
    such a tensor is left as it is rather than renamed into a duplicate definition."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from ipp_seg.nn.export import store_weights_as_float16

    w = np.arange(32 * 32, dtype=np.float32).reshape(32, 32) / 1024
    v = np.full((32, 32), 0.5, np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y0"]), helper.make_node("MatMul", ["y0", "V"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32]),
         helper.make_tensor_value_info("W", TensorProto.FLOAT, [32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(v, "V")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert store_weights_as_float16(proto) == 1  # V only
    onnx.checker.check_model(proto)
    kinds = {i.name: i.data_type for i in proto.graph.initializer}
    assert kinds == {"W": TensorProto.FLOAT, "V__fp16": TensorProto.FLOAT16}
    x = np.ones((1, 32), np.float32)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ w @ v, rtol=1e-6)


def test_export_at_size_whose_deepest_map_is_not_divisible_by_the_bins(tmp_path):
    """320x320 gives a 10x10 deepest map: bins 3 and 6 do not divide it."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from ipp_seg.nn.export import export_onnx

    model = build_network("dssau-net-s").eval()
    path = export_onnx(model, tmp_path / "m.onnx", (320, 320), {})
    x = np.random.default_rng(0).standard_normal((1, 1, 320, 320)).astype(np.float32)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert out.shape == (1, 3, 320, 320)


@pytest.mark.parametrize("cls", [DualSparseSelectionAttention, StarDSSA])
def test_the_padding_to_the_region_grid_takes_no_part_in_the_attention(cls):
    # A map that is not a multiple of S is padded to the grid: its zero keys had been routed to, kept by the
    # top-k2 and averaged into the regions' means (a network review: up to 96 % of the keys kept were padding at
    # inputs other than 256 px). With every region routed and every token kept, the attention is plain softmax
    # attention over the map's own tokens, padded or not.
    torch.manual_seed(0)
    attention = cls(16, region_topk=4, regions_per_side=2, head_dim=8, token_keep_fraction=1.0).eval()
    if cls is StarDSSA:
        attention.mix_logit.data.fill_(20.0)  # (routing by the prior alone, equal weights: no region favoured)
        attention.routing_logit_scale.data.fill_(-30.0)
    x = torch.randn(1, 16, 5, 7)
    with torch.no_grad():
        qkv = attention.qkv(x)
        q, k, v = (t.reshape(1, 2, 8, 35) for t in qkv.split(16, dim=1))  # [B, heads, d, N]
        weights = torch.softmax((q.transpose(-2, -1) * 8 ** -0.5) @ k, dim=-1)
        plain = (weights @ v.transpose(-2, -1)).transpose(-2, -1).reshape(1, 16, 5, 7)
        expected = attention.proj(plain + attention._local_term(qkv[:, 32:]))
        assert torch.allclose(attention(x), expected, atol=1e-5)
