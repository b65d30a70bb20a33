"""The eval-mode decoder block as one operation (transposed conv -> tdBN -> LIF): the fused CPU
pass (``kernels.scatter_block``) against the separate kernels and the NumPy reference, the
functional op's checks, where the spiking module uses it, and FSVAE's reconstruction path."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from snnvae import backend, nn
from snnvae import functional as F
from snnvae.autograd import Tensor, no_grad
from snnvae.kernels import cpu, numpy_ref, scatter_block

LIF = (0.2, 0.25, 0.5, 0.0)       # vth, tau, aa, window centre
# (C_in, C_out, H, W, stride, padding, output_padding, bias): the decoder's stride-2 blocks,
# odd sizes, a stride-1 layer and no bias
CASES = {
    "s2-decoder": (6, 8, 3, 3, 2, 1, 1, True),
    "s2-odd": (5, 9, 4, 3, 2, 1, 0, True),
    "s1": (4, 10, 5, 4, 1, 1, 0, True),
    "s2-no-bias": (3, 12, 2, 2, 2, 1, 1, False),
}


BATCH = max(4, numba.get_num_threads())   # the fused pass needs a sample per Numba thread


def _block_inputs(rng, case, dtype, T=5, N=BATCH, rate=0.12):
    C_in, C_out, H, W, stride, pad, op, has_bias = CASES[case]
    x = (rng.random((T, N, C_in, H, W)) < rate).astype(dtype)
    w = rng.normal(0, 0.6, (C_in, C_out, 3, 3)).astype(dtype)
    b = rng.normal(0, 0.1, C_out).astype(dtype) if has_bias else None
    gamma = rng.uniform(0.5, 2.0, C_out).astype(dtype)
    beta = rng.normal(0, 0.1, C_out).astype(dtype)
    y = numpy_ref.conv_transpose2d_forward(x.reshape(T * N, C_in, H, W), w, b, stride, pad, op)
    running_mean = y.mean(axis=(0, 2, 3)).astype(dtype)
    running_var = (y.var(axis=(0, 2, 3)) + 0.1).astype(dtype)
    return (x, w, b, stride, pad, op, gamma, beta, 0.2, running_mean, running_var, 1e-5)


def count_calls(monkeypatch, module, name):
    """The list that the shapes of the first argument of ``module.name``'s calls go to, for
    as long as the test runs."""
    calls = []
    original = getattr(module, name)

    def counted(*args):
        calls.append(args[0].shape)
        return original(*args)
    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the calls of the fused CPU pass."""
    return count_calls(monkeypatch, scatter_block, "conv_transpose2d_tdbn_lif_eval")


def _separate(args, smooth):
    return numpy_ref.compose_block_eval(cpu.conv_transpose2d_forward, cpu.tdbn_lif_forward_eval,
                                        *args, *LIF, smooth)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("smooth", [False, True], ids=["spike", "smooth"])
@pytest.mark.parametrize("case", list(CASES))
def test_fused_pass_equals_the_separate_kernels_bit_for_bit(dtype, smooth, case, fused_calls):
    args = _block_inputs(np.random.default_rng(1), case, dtype)
    fused = cpu.conv_transpose2d_tdbn_lif_forward_eval(*args, *LIF, smooth)
    assert fused_calls, "the sparse input with a sample per thread should take the fused pass"
    separate = _separate(args, smooth)
    assert fused.dtype == dtype and fused.shape == separate.shape
    np.testing.assert_array_equal(fused, separate)
    if not smooth:
        assert 0.02 < fused.mean() < 0.98 and set(np.unique(fused)) <= {0.0, 1.0}


@pytest.mark.parametrize("smooth", [False, True], ids=["spike", "smooth"])
@pytest.mark.parametrize("case", list(CASES))
def test_fused_pass_matches_the_numpy_reference(smooth, case, fused_calls):
    """float64: the reference's other summation order moves a membrane by ~1e-16, far too little
    to flip a spike of these random inputs."""
    args = _block_inputs(np.random.default_rng(2), case, np.float64)
    got = cpu.conv_transpose2d_tdbn_lif_forward_eval(*args, *LIF, smooth)
    want = numpy_ref.conv_transpose2d_tdbn_lif_forward_eval(*args, *LIF, smooth)
    assert fused_calls
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("why", ["dense input", "fewer samples than threads", "one channel out"])
def test_the_separate_kernels_run_where_the_fused_pass_would_not_win(why, fused_calls):
    rng = np.random.default_rng(3)
    N = 1 if why == "fewer samples than threads" else max(2, numba.get_num_threads())
    args = list(_block_inputs(rng, "s2-decoder", np.float64, N=N,
                              rate=0.6 if why == "dense input" else 0.1))
    if why == "one channel out":
        args[1], args[2] = args[1][:, :1], args[2][:1]
        args[6:8] = [a[:1] for a in args[6:8]]
        args[9:11] = [a[:1] for a in args[9:11]]
    if why == "fewer samples than threads" and numba.get_num_threads() == 1:
        pytest.skip("one Numba thread: every batch has a sample per thread")
    got = cpu.conv_transpose2d_tdbn_lif_forward_eval(*args, *LIF, False)
    assert not fused_calls
    np.testing.assert_array_equal(got, _separate(args, False))


def _block(rng, dtype=np.float32):
    block = nn.SpikingConvTranspose2d(6, 8, 3, stride=2, padding=1, output_padding=1, rng=rng,
                                      dtype=dtype)
    block.bn.running_mean[:] = rng.normal(0, 0.2, 8)
    block.bn.running_var[:] = rng.uniform(0.3, 2.0, 8)
    block.bn.weight.data[:] = rng.uniform(0.5, 2.0, 8)
    return block


def test_an_eval_block_without_gradients_runs_as_one_operation(fused_calls):
    rng = np.random.default_rng(4)
    block = _block(rng).eval()
    x = Tensor((rng.random((5, BATCH, 6, 3, 3)) < 0.15).astype(np.float32))
    with no_grad():
        one = block(x)
        assert len(fused_calls) == 1
        with nn.unfused_blocks():
            separate = block(x)
        with backend.use("numpy"):
            reference = block(x)
    assert len(fused_calls) == 1
    np.testing.assert_array_equal(one.data, separate.data)
    np.testing.assert_array_equal(one.data, reference.data)
    assert one.data.mean() > 0.02


def test_training_or_gradients_keep_the_differentiable_ops(fused_calls):
    rng = np.random.default_rng(5)
    block = _block(rng)
    x = Tensor((rng.random((3, BATCH, 6, 3, 3)) < 0.15).astype(np.float32))
    block(x)                                     # training mode: batch statistics
    block.eval()
    y = block(x)                                 # eval, but the parameters want gradients
    assert not fused_calls
    block.bn.train()
    with no_grad():
        block(x)                                 # the block in eval, its tdBN in training
    assert not fused_calls
    (y * y).sum().backward()
    assert block.weight.grad is not None


def test_the_op_refuses_what_it_cannot_do():
    rng = np.random.default_rng(6)
    block = _block(rng)
    bn = block.bn
    x = np.zeros((2, 4, 6, 3, 3), dtype=np.float32)

    def call(x=x, gamma=bn.weight, **kw):
        return F.conv_transpose2d_tdbn_lif_eval(x, block.weight, block.bias, gamma, bn.bias,
                                                bn.running_mean, bn.running_var, stride=2,
                                                padding=1, output_padding=1, **kw)
    with pytest.raises(RuntimeError, match="no backward.*no_grad"):
        call()
    with no_grad():
        assert call().shape == (2, 4, 8, 6, 6)
        with pytest.raises(ValueError, match="5 axes"):
            call(x=x[0])
        with pytest.raises(ValueError, match="input has 5 channels.*expects 6"):
            call(x=x[:, :, :5])
        with pytest.raises(ValueError, match=r"must have shape \(8,\)"):
            call(gamma=np.ones(7, dtype=np.float32))
        with pytest.raises(TypeError, match="share one dtype"):
            call(x=x.astype(np.float64))


def test_fsvae_reconstruct_is_forward_without_the_prior():
    from snnvae.models.config import FSVAEConfig
    from snnvae.models.fsvae import FSVAE
    config = FSVAEConfig(hidden_channels=(4, 8), latent_dim=6, k=3, timesteps=3, input_size=8)
    model = FSVAE(config, rng=np.random.default_rng(7))
    images = np.random.default_rng(8).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    # running statistics of a real batch: an uncalibrated network is silent in eval mode
    nn.calibrate_running_statistics(model, lambda: model(images, rng=np.random.default_rng(1)))
    model.eval()
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    with no_grad():
        want = model(images, rng=rng_a).reconstruction.data
    got = model.reconstruct(images, rng_b)
    np.testing.assert_array_equal(got, want)
    assert rng_a.random() == rng_b.random()      # the same draws were taken
    other = model.reconstruct(images, np.random.default_rng(10))
    assert not np.array_equal(other, got)        # the picks (the latent) shape the output


# --------------------------------------------------------------------------------------------
# The block summed over time for the read-out (conv_transpose2d_tdbn_lif_membrane_eval)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def summing_calls(monkeypatch):
    """Counts the calls of the CPU pass that sums the spikes as it makes them."""
    return count_calls(monkeypatch, scatter_block, "conv_transpose2d_tdbn_lif_membrane_eval")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("smooth", [False, True], ids=["spike", "smooth"])
@pytest.mark.parametrize("case", list(CASES))
def test_spikes_summed_in_the_pass_equal_the_membrane_output_of_the_spikes(dtype, smooth, case,
                                                                          summing_calls):
    args = _block_inputs(np.random.default_rng(11), case, dtype)
    got = cpu.conv_transpose2d_tdbn_lif_membrane_eval(*args, *LIF, smooth, 0.8)
    assert summing_calls, "the sparse input with a sample per thread should take the one pass"
    spikes = cpu.conv_transpose2d_tdbn_lif_forward_eval(*args, *LIF, smooth)
    want = cpu.membrane_forward(spikes.reshape(len(spikes), -1), 0.8).reshape(spikes.shape[1:])
    assert got.dtype == dtype and got.shape == spikes.shape[1:]
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, want, **tol)
    if dtype == np.float64:
        reference = numpy_ref.conv_transpose2d_tdbn_lif_membrane_eval(*args, *LIF, smooth, 0.8)
        np.testing.assert_allclose(got, reference, rtol=1e-10, atol=1e-12)
    assert np.ptp(got) > 0.1


def test_summing_without_the_one_pass_gives_the_same(summing_calls):
    if numba.get_num_threads() == 1:
        pytest.skip("one Numba thread: every batch has a sample per thread")
    args = _block_inputs(np.random.default_rng(12), "s2-decoder", np.float64, N=1)
    got = cpu.conv_transpose2d_tdbn_lif_membrane_eval(*args, *LIF, False, 0.8)
    assert not summing_calls
    want = numpy_ref.conv_transpose2d_tdbn_lif_membrane_eval(*args, *LIF, False, 0.8)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _calibrated(model_cls, config, images):
    model = model_cls(config, rng=np.random.default_rng(7), dtype=np.float64)
    nn.calibrate_running_statistics(model, lambda: model(images, rng=np.random.default_rng(1)))
    return model.eval()


@pytest.mark.parametrize("name", ["FSVAE", "ESVAE"])
def test_the_read_out_by_linearity_equals_the_modules_one_by_one(name, monkeypatch):
    from snnvae.models import ESVAE, FSVAE, ESVAEConfig, FSVAEConfig
    from snnvae.models.skeleton import SpikingVAESkeleton
    model_cls, config_cls = {"FSVAE": (FSVAE, FSVAEConfig), "ESVAE": (ESVAE, ESVAEConfig)}[name]
    config = config_cls(hidden_channels=(8, 8), latent_dim=6, timesteps=4, input_size=8)
    images = np.random.default_rng(8).uniform(-1, 1, (BATCH, 1, 8, 8))
    model = _calibrated(model_cls, config, images)
    summing_calls = count_calls(monkeypatch, cpu, "conv_transpose2d_tdbn_lif_membrane_eval")
    got = (model.reconstruct(images, np.random.default_rng(9)),
           model.sample(BATCH, np.random.default_rng(10)))
    assert len(summing_calls) == 2, "reconstruct and sample should read out in one pass"
    with nn.monitor_firing_rates(model) as rates:          # monitored: the modules one by one
        model.reconstruct(images, np.random.default_rng(9))
    assert len(summing_calls) == 2 and rates["final_layer.0"]
    monkeypatch.setattr(SpikingVAESkeleton, "_read_out_by_linearity", lambda self, h: None)
    want = (model.reconstruct(images, np.random.default_rng(9)),
            model.sample(BATCH, np.random.default_rng(10)))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
        assert np.ptp(w) > 0.1


def test_a_read_out_that_is_not_block_conv_membrane_runs_its_modules(monkeypatch):
    from snnvae.models import FSVAE, FSVAEConfig
    config = FSVAEConfig(hidden_channels=(8, 8), latent_dim=6, timesteps=4, input_size=8)
    images = np.random.default_rng(8).uniform(-1, 1, (BATCH, 1, 8, 8))
    model = _calibrated(FSVAE, config, images)
    block, layer = model.final_layer[0], model.final_layer[1]
    model.final_layer = nn.Sequential(block, layer, nn.Tanh())     # no longer linear
    summing_calls = count_calls(monkeypatch, cpu, "conv_transpose2d_tdbn_lif_membrane_eval")
    got = model.sample(BATCH, np.random.default_rng(10))
    assert not summing_calls
    from snnvae.models.skeleton import SpikingVAESkeleton
    monkeypatch.setattr(SpikingVAESkeleton, "_read_out_by_linearity", lambda self, h: None)
    np.testing.assert_array_equal(got, model.sample(BATCH, np.random.default_rng(10)))


@pytest.mark.parametrize("name", ["FSVAE", "ESVAE"])
def test_the_training_read_out_by_linearity_equals_the_modules_one_by_one(name, monkeypatch):
    """In training the read-out layer runs on the spikes summed over time (N images, not T*N):
    the same losses and gradients of every parameter as running the modules one by one."""
    from snnvae.models import ESVAE, FSVAE, ESVAEConfig, FSVAEConfig
    from snnvae.models.skeleton import SpikingVAESkeleton
    model_cls, config_cls = {"FSVAE": (FSVAE, FSVAEConfig), "ESVAE": (ESVAE, ESVAEConfig)}[name]
    config = config_cls(hidden_channels=(8, 8), latent_dim=6, timesteps=4, input_size=8)
    images = np.random.default_rng(8).uniform(-1, 1, (BATCH, 1, 8, 8))

    def gradients():
        model = model_cls(config, rng=np.random.default_rng(7), dtype=np.float64).train()
        losses = model.training_losses(images, np.random.default_rng(9), 1, 10)
        losses["loss"].backward()
        return losses["loss"].item(), {n: p.grad for n, p in model.named_parameters()}

    read_out_calls = count_calls(monkeypatch, cpu, "conv_transpose2d_forward")
    loss, grads = gradients()
    T, N = config.timesteps, BATCH
    assert (N, 8, 8, 8) in read_out_calls and (T * N, 8, 8, 8) not in read_out_calls
    monkeypatch.setattr(SpikingVAESkeleton, "_read_out_by_linearity", lambda self, h: None)
    read_out_calls.clear()
    want_loss, want_grads = gradients()
    assert (T * N, 8, 8, 8) in read_out_calls
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert grads.keys() == want_grads.keys()
    for key in grads:
        np.testing.assert_allclose(grads[key], want_grads[key], rtol=1e-9, atol=1e-12,
                                   err_msg=key)
    assert np.ptp(grads["final_layer.1.weight"]) > 0 and np.ptp(grads["encoder.0.weight"]) > 0
