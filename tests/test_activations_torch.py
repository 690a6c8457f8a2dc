"""Every activation of the registry against PyTorch, forward and backward, in float64,
on every backend here and the CUDA kernels run on the CPU: through the ops the layers
call (the fused kernels where a backend has them), with |z| up to 1e4, and every
activation with a parameter also at alpha = 0.3. The PyTorch op each spec names
(``torch``) is the reference; its ``torch_backward`` (the aten kernel the benchmarks
time) must give autograd's gradient."""

import numpy as np
import pytest
from conftest import dev, host
from cuda_emulator import EmulatedCudaBackend, build, compiler

from fastnn import activations

torch = pytest.importorskip(
    "torch", reason="PyTorch is the reference here; install it with: pip install torch")

Z = np.concatenate([np.linspace(-12.0, 12.0, 58), [-1e4, -708.5, -500.0, -87.5, -30.0,
                    -1e-8, 0.0, 1e-8, 30.0, 87.5, 500.0, 1e4]]).reshape(-1, 7)
RTOL, ATOL = 1e-9, 1e-12


def _cases():
    for cls in activations.SPECS:
        yield pytest.param(cls(), id=cls.name)
        if "alpha" in vars(cls()):
            yield pytest.param(cls(alpha=0.3), id=f"{cls.name}-alpha0.3")


CASES = list(_cases())


def _torch(act, z, dA):
    """PyTorch's f(z) and, by autograd, dA * f'(z) (None if not differentiable)."""
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=act.differentiable)
    at = act.torch(torch, zt)
    if not act.differentiable:
        return at.detach().numpy(), None
    (dz,) = torch.autograd.grad(at, zt, torch.tensor(dA))
    aten = act.torch_backward(torch, torch.tensor(dA), zt.detach(), at.detach())
    np.testing.assert_allclose(aten.numpy(), dz.numpy(), rtol=1e-12, atol=1e-300,
                               err_msg="torch_backward is not autograd's gradient")
    return at.detach().numpy(), dz.numpy()


def _check(target, act):
    rng = np.random.default_rng(3)
    dA = rng.normal(size=Z.shape)
    expected_a, expected_dz = _torch(act, Z, dA)
    n = Z.shape[1]
    X, W, b = (dev(target, v) for v in (Z, np.eye(n), np.zeros(n)))  # X @ I is exact
    Zd, A = target.ops.dense_forward(X, W, b, act)
    np.testing.assert_allclose(host(target, A), expected_a, rtol=RTOL, atol=ATOL)
    if expected_dz is not None:
        dZ, db = target.ops.activation_backward(dev(target, dA), Zd, A, act)
        np.testing.assert_allclose(host(target, dZ), expected_dz, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(host(target, db), expected_dz.sum(axis=0), rtol=RTOL,
                                   atol=ATOL * Z.shape[0])


@pytest.mark.parametrize("act", CASES)
def test_matches_pytorch_on_each_backend(backend, act, no_float_warnings):
    _check(backend, act)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    if compiler() is None:
        pytest.skip("no C++ compiler (g++) to run the CUDA kernels on the CPU")
    return EmulatedCudaBackend(build(tmp_path_factory.mktemp("kernels")))


@pytest.mark.parametrize("act", CASES)
def test_the_cuda_kernels_match_pytorch(emulated, act):
    before = len(emulated.launcher.launches)
    _check(emulated, act)
    if act.elementwise:  # the fused kernels ran, not the generic fallback
        assert any(name.startswith("bias_act_forward")
                   for name in emulated.launcher.launches[before:])
