"""minGRU and minLSTM (`cells/mingru.py`, `cells/minlstm.py`): the loop is the paper's equations; the
log-space scan stays finite and close to the loop over long sequences in float32. (That every
implementation equals the loop — outputs, states, every gradient, float64, with lengths, both
directions, stacked, from a given state — is `tests/test_cells.py`'s, parametrised over the registry.)"""

from __future__ import annotations

import pytest
import torch

from cells import CELLS, build_cell, copy_weights
from cells.linear_recurrence import g, linear_scan_log, log_g

MINIMAL = ["mingru", "minlstm"]


def test_g_is_positive_and_log_g_is_its_log():
    v = torch.linspace(-30, 30, 601, dtype=torch.float64)
    assert torch.all(g(v) > 0)
    torch.testing.assert_close(log_g(v), g(v).log())
    torch.testing.assert_close(g(torch.tensor([0.0, 2.0, -1.0])), torch.tensor([0.5, 2.5, torch.sigmoid(torch.tensor(-1.0))]))


def test_the_loops_are_the_papers_equations():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    h0 = torch.randn(1, 3, 4, dtype=torch.float64)
    gru = build_cell("mingru_handwritten", 2, 4).double()
    lstm = build_cell("minlstm_handwritten", 2, 4).double()
    for cell in (gru, lstm):
        assert set(cell.weights()) == {"weight_ih_l0", "bias_ih_l0"}, "no recurrent weights"
    h_gru, h_lstm = h0[0], h0[0]
    expected_gru, expected_lstm = [], []
    for t in range(6):
        v = x[:, t] @ gru.weight_ih_l0.t() + gru.bias_ih_l0
        z, candidate = torch.sigmoid(v[:, :4]), g(v[:, 4:])
        h_gru = (1 - z) * h_gru + z * candidate
        expected_gru.append(h_gru)
        v = x[:, t] @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0
        f, i, candidate = torch.sigmoid(v[:, :4]), torch.sigmoid(v[:, 4:8]), g(v[:, 8:])
        h_lstm = f / (f + i) * h_lstm + i / (f + i) * candidate
        expected_lstm.append(h_lstm)
    for cell, expected in ((gru, expected_gru), (lstm, expected_lstm)):
        out, (final,) = cell(x, (h0,))
        torch.testing.assert_close(out, torch.stack(expected, 1))
        torch.testing.assert_close(final[0], expected[-1])


def test_the_scan_takes_any_initial_state_not_only_a_positive_one():
    torch.manual_seed(1)
    log_a = -torch.rand(2, 9, 3, dtype=torch.float64) * 2
    b = torch.rand(2, 9, 3, dtype=torch.float64) + 0.1
    h0 = torch.tensor([[-2.0, 0.0, 3.0], [0.5, -0.1, 0.0]], dtype=torch.float64)
    h, expected = h0, []
    for t in range(9):
        h = log_a[:, t].exp() * h + b[:, t]
        expected.append(h)
    torch.testing.assert_close(linear_scan_log(log_a, b.log(), h0), torch.stack(expected, 1))
    for chunk in (1, 2, 4):  # in pieces, the last one short: the same
        torch.testing.assert_close(linear_scan_log(log_a, b.log(), h0, chunk), torch.stack(expected, 1))


@pytest.mark.parametrize("architecture", MINIMAL)
def test_whole_pieces_of_padding_leave_the_state_and_every_gradient_as_the_loop_has_them(architecture):
    from tests.test_cells import make_pair, run_and_grad

    torch.manual_seed(3)
    cell, twin = make_pair(f"{architecture}_scan", 3, 5, 2, True, torch.float64)
    x = torch.randn(3, 200, 3, dtype=torch.float64)  # pieces of 64: the short sequences' last ones all padding
    lengths = torch.tensor([200, 5, 70])
    (out, final, grads), (out_t, final_t, grads_t) = (run_and_grad(c, x, None, lengths, seed=1) for c in (cell, twin))
    tol = 1e-10  # float64, sums over 200 steps
    torch.testing.assert_close(out, out_t, rtol=tol, atol=tol)
    torch.testing.assert_close(final, final_t, rtol=tol, atol=tol)
    assert grads.keys() == grads_t.keys()
    for key in grads:
        assert torch.isfinite(grads[key]).all(), key
        torch.testing.assert_close(grads[key], grads_t[key], rtol=tol, atol=tol)


@pytest.mark.parametrize("form", ["scan", "kernel"])
@pytest.mark.parametrize("steps", [784, 4096])
@pytest.mark.parametrize("architecture", MINIMAL)
def test_the_float32_forms_stay_finite_and_close_to_the_loop_over_long_sequences(architecture, steps, form):
    """Tolerance: the C++ kernel is the loop in one pass (float32 throughout); the scan takes log A_t from the start of each piece of 64 steps and adds it to a
    logcumsumexp of about its opposite; float32 keeps 6e-8 of each, so the error is bounded by a
    piece's |log A_t|, whatever the length (`cells/linear_recurrence.py`). Measured here (a keep-gate near
    0.9) as a share of the largest value: outputs 8e-7 to 2e-6, weight gradients 2e-6 to 6e-6 at
    both lengths, the float32 loop's own 2e-7 and 6e-6 (over the whole 4,096 steps at once: 1e-4
    and 2e-3). The bounds, 2e-5 of the largest output and 2e-4 of the largest gradient, leave
    room for the sums over 32,768 positions that a gradient adds up."""
    torch.manual_seed(2)
    scan = build_cell(f"{architecture}_{form}", 4, 16)
    scan.initialise(forget_bias=2.0)
    with torch.no_grad():  # minGRU: a keep-gate near 0.9 too (z's bias -2)
        if architecture == "mingru":
            scan.bias_ih_l0[:16] = -2.0
    loop = build_cell(f"{architecture}_handwritten", 4, 16).double()
    copy_weights(scan, loop)
    x = torch.randn(8, steps, 4)
    x32, x64 = x.clone().requires_grad_(True), x.double().requires_grad_(True)
    out32, (h32,) = scan(x32)
    out64, (h64,) = loop(x64)
    assert torch.isfinite(out32).all() and torch.isfinite(h32).all()

    def close(a, b, share):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=share * b.abs().max().item())

    close(out32, out64, 2e-5)
    close(h32, h64, 2e-5)
    weight = torch.randn(out32.shape)
    (out32 * weight).sum().backward()
    (out64 * weight.double()).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in scan.parameters()) and torch.isfinite(x32.grad).all()
    close(x32.grad, x64.grad, 2e-4)
    for name, p in scan.weights().items():
        close(p.grad, loop.weights()[name].grad, 2e-4)


@pytest.mark.parametrize("project_inside", [0, 64], ids=["matmul-first", "inside"])
@pytest.mark.parametrize("architecture", MINIMAL)
def test_the_kernel_equals_the_loop_with_its_projection_before_it_or_inside_it(architecture, project_inside,
                                                                               monkeypatch):
    """Both of the kernel's inputs: xp from one matrix product, or x projected step by step inside it
    (every gradient of W and b then summed by the kernel); tests/test_cells.py checks the registry's
    sizes, whose first layers are narrow (inside) and stacked bidirectional ones wide (before)."""
    from cells import linear_recurrence
    from tests.test_cells import make_pair, run_and_grad

    monkeypatch.setattr(linear_recurrence, "PROJECT_INSIDE", project_inside)
    torch.manual_seed(4)
    cell, twin = make_pair(f"{architecture}_kernel", 20, 6, 2, True, torch.float64)
    x = torch.randn(4, 11, 20, dtype=torch.float64)
    state = (torch.randn(4, 4, 6, dtype=torch.float64),)
    lengths = torch.tensor([11, 1, 6, 11])
    (out, final, grads), (out_t, final_t, grads_t) = (run_and_grad(c, x, state, lengths, seed=2) for c in (cell, twin))
    torch.testing.assert_close(out, out_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, final_t, rtol=1e-12, atol=1e-12)
    assert grads.keys() == grads_t.keys() and "state[0]" in grads
    for key in grads:
        torch.testing.assert_close(grads[key], grads_t[key], rtol=1e-12, atol=1e-12, msg=lambda m, key=key: f"{key}: {m}")


def test_the_kernel_cells_refuse_another_device_by_name_and_say_what_serves():
    cell = build_cell("mingru_kernel", 2, 3)
    x = torch.zeros(1, 4, 2, device="meta")
    with pytest.raises(RuntimeError, match="runs on the CPU only.*mingru_scan or mingru_sequential"):
        cell.direction(x, cell.weight_ih_l0.to("meta"), cell.bias_ih_l0.to("meta"), None, None,
                       (torch.zeros(1, 3, device="meta"),), None, None)


def test_a_kernel_that_cannot_be_built_says_what_it_needs(monkeypatch):
    from torch.utils import cpp_extension

    from cells import linear_recurrence

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(linear_recurrence, "_EXTENSION", None)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    with pytest.raises(RuntimeError, match=r"could not be built: Ninja is required.*g\+\+.*ninja.*_sequential"):
        build_cell("minlstm_kernel", 2, 3)(torch.zeros(1, 4, 2))


def test_a_build_lock_left_by_a_stopped_build_is_removed_and_a_fresh_one_is_kept(monkeypatch, tmp_path, capsys):
    """A build killed part-way leaves its lock, on which torch would wait for ever."""
    import os
    import time

    from torch.utils import cpp_extension

    from cells import linear_recurrence

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(linear_recurrence, "_EXTENSION", None)
    seen = []
    monkeypatch.setattr(cpp_extension, "load", lambda name, *a, **k: seen.append(name) or "built")
    lock = tmp_path / f"rnnbench_linear_recurrence_{linear_recurrence._cpu_key()}" / "lock"
    lock.parent.mkdir()
    lock.touch()
    assert linear_recurrence.kernels() == "built" and lock.exists(), "a lock of a build under way stays"
    monkeypatch.setattr(linear_recurrence, "_EXTENSION", None)
    old = time.time() - linear_recurrence.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    assert linear_recurrence.kernels() == "built" and not lock.exists()
    assert "removing the stale build lock" in capsys.readouterr().err
    assert len(seen) == 2


@pytest.mark.parametrize("architecture", MINIMAL)
def test_the_float32_kernel_stays_finite_at_saturated_gates(architecture):
    """Pre-activations out to +-200: where exp(-v) overflows float32 (v < -88), and where both of
    minLSTM's gates are near 0 (so (f + i)^2 underflows); the float64 loop is the reference."""
    kernel = build_cell(f"{architecture}_kernel", 1, 32)  # 32 lanes: the vectorised loop, not its remainder
    loop = build_cell(f"{architecture}_handwritten", 1, 32).double()
    with torch.no_grad():
        kernel.bias_ih_l0.zero_()
        kernel.weight_ih_l0.copy_(torch.tensor([1.0, -1.0, 0.5, -0.5] * (kernel.weight_ih_l0.shape[0] // 4)).unsqueeze(1))
    copy_weights(kernel, loop)
    x = torch.tensor([-200.0, -120.0, -95.0, -60.0, 0.0, 60.0, 95.0, 200.0]).view(1, 8, 1).repeat(2, 1, 1)
    x32, x64 = x.clone().requires_grad_(True), x.double().requires_grad_(True)
    out32, _ = kernel(x32)
    out64, _ = loop(x64)
    assert torch.isfinite(out32).all(), out32
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5)
    out32.sum().backward()
    out64.sum().backward()
    assert torch.isfinite(x32.grad).all() and all(torch.isfinite(p.grad).all() for p in kernel.parameters())
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)


def test_loading_the_kernel_leaves_denormal_numbers_to_the_rest_of_the_process():
    """The kernel is built with -ffast-math; a library linked with the compiler's fast-math start-up
    code would switch on flush-to-zero for every computation of the process, the other cells' too."""
    import subprocess
    import sys

    script = ("import torch; from cells.linear_recurrence import kernels; kernels(); "
              "x = torch.tensor([1e-39], dtype=torch.float32); print((x / 10).item() > 0, (x * 0.5).item() > 0)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True"], result.stdout + result.stderr


def test_the_minlstm_forget_bias_reaches_its_forget_gate():
    cell = build_cell("minlstm_scan", 3, 4)
    cell.initialise(forget_bias=1.5)
    assert torch.all(cell.bias_ih_l0[:4] == 1.5) and not torch.all(cell.bias_ih_l0[4:8] == 1.5)
    assert CELLS.get("minlstm_scan").cls.forget_gate == 0 and CELLS.get("mingru_scan").cls.forget_gate is None


def test_a_two_dimensional_scan_refuses_them_by_name():
    from cells.scan2d import RowScan

    with pytest.raises(ValueError, match=r"cell 'mingru_scan' \(minGRU\) cannot serve a two-dimensional scan"):
        RowScan("mingru_scan", 1, 4)
