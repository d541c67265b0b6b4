"""Every hand-written cell computes exactly what its library twin computes.

The tests are parametrised over the registry: a newly registered cell with a `twin` is
checked here without a new test.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from cells import CELLS, build_cell, copy_weights

EAGER = [spec.name for spec in CELLS if not spec.compiled]
TWINNED = [spec.name for spec in CELLS if spec.twin and not spec.compiled]
# compiled cells compile once per shape (seconds each): they get two configurations that between
# them cover one and two layers and directions, lengths, and both precisions
COMPILED = [spec.name for spec in CELLS if spec.twin and spec.compiled]
COMPILED_CONFIGS = [((3, 5), 1, False, False, torch.float32), ((8, 16), 2, True, True, torch.float64)]
SIZES = [(3, 5), (8, 16)]  # (input_size, hidden_size)
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def make_pair(name, input_size, hidden_size, num_layers, bidirectional, dtype, **options):
    spec = CELLS.get(name)
    twin = build_cell(spec.twin, input_size, hidden_size, num_layers, bidirectional, **options).to(dtype)
    cell = build_cell(name, input_size, hidden_size, num_layers, bidirectional, **options).to(dtype)
    copy_weights(twin, cell)
    return cell, twin


def run_and_grad(cell, x, state, lengths, seed):
    """Outputs, final state, and gradients of x, the initial state and every weight."""
    x = x.clone().requires_grad_(True)
    state = None if state is None else tuple(s.clone().requires_grad_(True) for s in state)
    output, final = cell(x, state, lengths)
    # a random linear function of everything returned, so every output element gets a gradient
    gen = torch.Generator().manual_seed(seed)
    loss = (output * torch.randn(output.shape, generator=gen, dtype=x.dtype).to(x.device)).sum()
    for f in final:
        loss = loss + (f * torch.randn(f.shape, generator=gen, dtype=x.dtype).to(x.device)).sum()
    loss.backward()
    grads = {"x": x.grad}
    if state is not None:
        grads.update({f"state[{i}]": s.grad for i, s in enumerate(state)})
    grads.update({name: p.grad for name, p in cell.weights().items()})
    return output.detach(), tuple(f.detach() for f in final), grads


def assert_same(cell, twin, x, state=None, lengths=None):
    tol = TOLERANCE[x.dtype]
    out, final, grads = run_and_grad(cell, x, state, lengths, seed=1)
    out_t, final_t, grads_t = run_and_grad(twin, x, state, lengths, seed=1)
    torch.testing.assert_close(out, out_t, rtol=tol, atol=tol, msg=lambda m: f"outputs differ: {m}")
    assert len(final) == len(final_t) == cell.state_size
    for i, (a, b) in enumerate(zip(final, final_t)):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m, i=i: f"final state[{i}] differs: {m}")
    assert grads.keys() == grads_t.keys()
    for key in grads:
        assert grads[key] is not None, f"no gradient for {key}"
        torch.testing.assert_close(grads[key], grads_t[key], rtol=tol, atol=tol, msg=lambda m, key=key: f"grad of {key}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["dense", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["1layer", "2layers"])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"i{s[0]}h{s[1]}")
@pytest.mark.parametrize("name", TWINNED)
def test_matches_twin(name, sizes, num_layers, bidirectional, with_lengths, dtype):
    torch.manual_seed(0)
    input_size, hidden_size = sizes
    cell, twin = make_pair(name, input_size, hidden_size, num_layers, bidirectional, dtype)
    x = torch.randn(5, 7, input_size, dtype=dtype)
    lengths = torch.tensor([7, 3, 1, 6, 7]) if with_lengths else None
    assert_same(cell, twin, x, lengths=lengths)


@pytest.mark.parametrize("sizes, num_layers, bidirectional, with_lengths, dtype", COMPILED_CONFIGS,
                         ids=["1layer-uni-dense-f32", "2layers-bi-lengths-f64"])
@pytest.mark.parametrize("name", COMPILED)
def test_compiled_matches_twin(name, sizes, num_layers, bidirectional, with_lengths, dtype):
    from torch._dynamo.utils import counters

    before = counters["stats"]["unique_graphs"]
    test_matches_twin(name, sizes, num_layers, bidirectional, with_lengths, dtype)
    assert counters["stats"]["unique_graphs"] > before, "the time loop must run as a compiled graph"


def test_compiled_pieces_cover_the_sequence():
    from cells.compiled import CHUNK, pieces

    assert pieces(28) == [28] and pieces(CHUNK) == [CHUNK]
    assert pieces(100) == [25, 25, 25, 25]
    assert pieces(784) == [32] * 24 + [16]
    for steps in range(1, 300):
        sizes = pieces(steps)
        assert sum(sizes) == steps and max(sizes) <= CHUNK and len(set(sizes[:-1])) <= 1, steps
        assert len(sizes) == -(-steps // CHUNK), f"{steps} steps in more pieces than needed"


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_in_pieces_matches_twin(name, monkeypatch):
    """A sequence longer than a piece runs as several calls of the compiled loop, state carried
    across them: 7 steps as pieces of 3, 3 and 1, padded sequences ending inside a piece."""
    import cells.compiled

    monkeypatch.setattr(cells.compiled, "CHUNK", 3)
    assert cells.compiled.pieces(7) == [3, 3, 1]
    test_matches_twin(name, (3, 5), 1, True, True, torch.float64)


def test_compiled_mode_follows_the_device():
    from cells.compiled import COMPILE_MODE

    cell = build_cell("lstm_compiled", 3, 5)
    assert COMPILE_MODE["cuda"] == "reduce-overhead"  # CUDA graphs on a GPU
    assert cell.compiled_scan("cpu") is cell.compiled_scan("cpu")  # compiled once per mode
    assert cell.compiled_scan("cuda") is not cell.compiled_scan("cpu")
    assert copy.deepcopy(cell)._compiled_scans == {}  # compiled again on the other side of a copy


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: checks the cells against cuDNN")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", [spec.name for spec in CELLS if spec.twin and not getattr(spec.cls, "cpu_only", False)])
def test_cuda_matches_twin(name, dtype, monkeypatch):
    """On a GPU the twin is cuDNN's kernel and the compiled cells are Triton kernels."""
    from bench.precision import set_backend_precision

    for flag in (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn):
        monkeypatch.setattr(flag, "fp32_precision", flag.fp32_precision)  # restored after the test
    set_backend_precision("32")  # TF32 would round the twin's matmuls
    torch.manual_seed(0)
    cell, twin = make_pair(name, 8, 16, 2, True, dtype)
    cell, twin = cell.cuda(), twin.cuda()
    x = torch.randn(5, 7, 8, dtype=dtype, device="cuda")
    assert_same(cell, twin, x, lengths=torch.tensor([7, 3, 1, 6, 7]))


@pytest.mark.parametrize("with_lengths", [False, True], ids=["dense", "lengths"])
@pytest.mark.parametrize("name", TWINNED)
def test_matches_twin_from_given_state(name, with_lengths):
    torch.manual_seed(0)
    cell, twin = make_pair(name, 4, 6, 2, True, torch.float64)
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    state = tuple(torch.randn(4, 3, 6, dtype=torch.float64) for _ in range(cell.state_size))
    assert_same(cell, twin, x, state, torch.tensor([2, 5, 4]) if with_lengths else None)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_relu_rnn_matches_twin(bidirectional):
    torch.manual_seed(0)
    cell, twin = make_pair("rnn_handwritten", 3, 5, 2, bidirectional, torch.float64, nonlinearity="relu")
    assert_same(cell, twin, torch.randn(4, 6, 3, dtype=torch.float64), lengths=torch.tensor([6, 2, 5, 1]))


@pytest.mark.parametrize("lengths", [[7, 3, 3, 6, 7], [4, 5, 4, 4, 7], [7, 7, 7, 7, 7]], ids=["spread", "near", "equal"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "state"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["1layer", "2layers"])
@pytest.mark.parametrize("name", [spec.name for spec in CELLS if spec.name.endswith("_fused")])
def test_fused_head_and_tail_equals_packed(name, num_layers, with_state, lengths):
    """On CPU a fused cell runs the steps every sequence has in one plain call and packs only the
    sequences that go on: outputs, final state and every gradient are those of packing them whole."""
    torch.manual_seed(0)
    cell = build_cell(name, 3, 5, num_layers).double()
    packed = copy.deepcopy(cell)
    packed.run_head_and_tail = packed.run_packed  # this instance: the whole batch packed
    packed_sizes = []
    run_packed = cell.run_packed
    cell.run_packed = lambda x, hx, lengths: packed_sizes.append(x.shape[:2]) or run_packed(x, hx, lengths)
    lengths = torch.tensor(lengths)
    x = torch.randn(5, 7, 3, dtype=torch.float64)
    state = tuple(torch.randn(num_layers, 5, 5, dtype=torch.float64) for _ in range(cell.state_size)) if with_state \
        else None
    assert_same(cell, packed, x, state, lengths)
    shortest = int(lengths.min())
    going = int((lengths > shortest).sum())
    assert packed_sizes == ([(going, 7 - shortest)] if going else []), "only the steps after the shortest, packed"


@pytest.mark.parametrize("name", EAGER)
def test_padding_does_not_change_results(name):
    """A padded batch gives each sequence the outputs and state it gets alone."""
    torch.manual_seed(0)
    cell = build_cell(name, 3, 4, num_layers=2, bidirectional=True).double().eval()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 4])
    out, state = cell(x, lengths=lengths)
    alone_out, alone_state = cell(x[1:, :4])
    torch.testing.assert_close(out[1, :4], alone_out[0])
    assert torch.all(out[1, 4:] == 0), "outputs after the end of a sequence must be zero"
    for s, alone in zip(state, alone_state):
        torch.testing.assert_close(s[:, 1], alone[:, 0])
    garbage = x.clone()
    garbage[1, 4:] = 1e3
    out_g, state_g = cell(garbage, lengths=lengths)
    torch.testing.assert_close(out_g, out)


@pytest.mark.parametrize("name", EAGER)
def test_shapes_and_state_form(name):
    spec = CELLS.get(name)
    cell = build_cell(name, 3, 4, num_layers=3, bidirectional=True)
    out, state = cell(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 8)
    assert isinstance(state, tuple) and len(state) == (2 if spec.architecture == "LSTM" else 1)
    assert all(s.shape == (6, 2, 4) for s in state)
    # the last layer's final forward h is the output at the last step; backward h at step 0
    torch.testing.assert_close(state[0][4], out[:, -1, :4])
    torch.testing.assert_close(state[0][5], out[:, 0, 4:])


@pytest.mark.parametrize("name", TWINNED)
def test_dropout_between_layers_is_applied_in_training_only(name):
    torch.manual_seed(0)
    cell = build_cell(name, 3, 4, num_layers=2, dropout=0.5)
    x = torch.randn(2, 5, 3)
    cell.eval()
    a, _ = cell(x)
    b, _ = cell(x)
    torch.testing.assert_close(a, b)
    cell.train()
    c, _ = cell(x)
    assert not torch.allclose(a, c)


def test_every_cell_is_described_and_twins_exist():
    assert set(CELLS.names()) >= {
        f"{arch}_{impl}" for arch, impl in itertools.product(("rnn", "lstm", "gru"), ("fused", "handwritten"))
    }
    for spec in CELLS:
        assert spec.description and "\n" not in spec.description
        if spec.twin:
            assert CELLS.get(spec.twin).architecture == spec.architecture
