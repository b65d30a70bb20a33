"""Readable NumPy kernels: the oracle for every other backend and the text the lessons quote.

Kernels take arrays and return arrays. They know nothing about Tensors, modules or autograd.
Every kernel here has a twin with the same name and signature in ``cpu.py`` (Numba), and the
tests compare the two on random inputs.

Layout is time first. A spiking tensor is ``(T, N, C, H, W)`` or ``(T, N, F)``; a layer whose
weights are shared over time receives it with T folded into the batch, ``(T*N, C, H, W)``, which
is a free reshape of a contiguous array. Neuron kernels receive ``(T, M)`` with ``M`` every
other axis flattened, and walk t = 0..T-1 for each of the M neurons.
"""
from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------------------------
# Time-distributed linear:  y[r, o] = sum_i x[r, i] w[o, i] + b[o],  rows r = (t, n)
# --------------------------------------------------------------------------------------------


def linear_forward(x, w, b):
    """x (R, F_in), w (F_out, F_in), b (F_out,) or None -> y (R, F_out)."""
    y = x @ w.T
    if b is not None:
        y += b
    return y


def linear_backward(gy, x, w, has_bias):
    """Gradients of ``linear_forward``: gx = gy w, gw = gy^T x, gb = sum_r gy."""
    gx = gy @ w
    gw = gy.T @ x
    gb = gy.sum(axis=0) if has_bias else None
    return gx, gw, gb


def linear_delta_into(y, x_new, x_old, wt):
    """y (R, F_out) += (x_new - x_old) wt, in place, and returns y: the outputs of a linear layer
    for inputs x_old (R, F_in), moved to those for x_new. wt (F_in, F_out) is the weight
    transposed. Where x_new and x_old differ in few entries (spikes of a layer re-run on a
    slightly changed input) the event-driven kernels add one row of wt per changed entry."""
    y += (x_new - x_old) @ wt
    return y


# --------------------------------------------------------------------------------------------
# 2-D convolution (cross-correlation, as every deep-learning library defines it)
#   y[b, o, i, j] = bias[o] + sum_{c, p, q} w[o, c, p, q] * x[b, c, i*s - pad + p, j*s - pad + q]
# with x read as zero outside the image. Output size H_out = (H + 2 pad - k) // s + 1.
# The loop below runs over the k*k kernel offsets; each offset is one strided slice of the
# padded input and one small matrix product over channels.
# --------------------------------------------------------------------------------------------


def conv_out_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def conv_transpose_out_size(size, kernel, stride, padding, output_padding):
    return (size - 1) * stride - 2 * padding + kernel + output_padding


def _offset_slice(p, stride, count):
    """Rows p, p + s, ..., p + s (count - 1) of a padded image."""
    return slice(p, p + stride * (count - 1) + 1, stride)


def conv2d_forward(x, w, b, stride, padding):
    """x (B, C_in, H, W), w (C_out, C_in, kh, kw), b (C_out,) or None -> (B, C_out, Ho, Wo)."""
    B, _, H, W = x.shape
    C_out, _, kh, kw = w.shape
    Ho, Wo = conv_out_size(H, kh, stride, padding), conv_out_size(W, kw, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.zeros((B, C_out, Ho, Wo), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            patch = xp[:, :, _offset_slice(p, stride, Ho), _offset_slice(q, stride, Wo)]
            y += np.einsum("bchw,oc->bohw", patch, w[:, :, p, q])
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv2d_backward(gy, x, w, stride, padding, has_bias):
    """Gradients of ``conv2d_forward`` for gy (B, C_out, Ho, Wo): (gx, gw, gb)."""
    _, _, H, W = x.shape
    _, _, kh, kw = w.shape
    Ho, Wo = gy.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for p in range(kh):
        for q in range(kw):
            rows, cols = _offset_slice(p, stride, Ho), _offset_slice(q, stride, Wo)
            gw[:, :, p, q] = np.einsum("bohw,bchw->oc", gy, xp[:, :, rows, cols])
            gxp[:, :, rows, cols] += np.einsum("bohw,oc->bchw", gy, w[:, :, p, q])
    gx = gxp[:, :, padding:padding + H, padding:padding + W]
    gb = gy.sum(axis=(0, 2, 3)) if has_bias else None
    return np.ascontiguousarray(gx), gw, gb


# --------------------------------------------------------------------------------------------
# 2-D transposed convolution: the adjoint (gradient) of a convolution, used to upsample.
#   y[b, o, i*s - pad + p, j*s - pad + q] += x[b, c, i, j] * w[c, o, p, q]   (+ bias[o])
# keeping only output positions inside [0, H_out) x [0, W_out), where
# H_out = (H - 1) s - 2 pad + k + output_padding.  Weight layout (C_in, C_out, kh, kw).
# --------------------------------------------------------------------------------------------


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding):
    """x (B, C_in, H, W), w (C_in, C_out, kh, kw) -> (B, C_out, Ho, Wo)."""
    B, _, H, W = x.shape
    _, C_out, kh, kw = w.shape
    Ho = conv_transpose_out_size(H, kh, stride, padding, output_padding)
    Wo = conv_transpose_out_size(W, kw, stride, padding, output_padding)
    # A canvas with `padding` extra rows/cols on each side holds every scattered value;
    # cropping it afterwards applies the padding.
    full = np.zeros((B, C_out, Ho + 2 * padding + kh, Wo + 2 * padding + kw), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            full[:, :, _offset_slice(p, stride, H), _offset_slice(q, stride, W)] += np.einsum(
                "bchw,co->bohw", x, w[:, :, p, q])
    y = full[:, :, padding:padding + Ho, padding:padding + Wo].copy()
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv_transpose2d_backward(gy, x, w, stride, padding, has_bias):
    """Gradients of ``conv_transpose2d_forward`` for gy (B, C_out, Ho, Wo): (gx, gw, gb)."""
    B, _, H, W = x.shape
    _, C_out, kh, kw = w.shape
    Ho, Wo = gy.shape[2:]
    full = np.zeros((B, C_out, Ho + 2 * padding + kh, Wo + 2 * padding + kw), dtype=gy.dtype)
    full[:, :, padding:padding + Ho, padding:padding + Wo] = gy
    gx = np.zeros_like(x)
    gw = np.zeros_like(w)
    for p in range(kh):
        for q in range(kw):
            g = full[:, :, _offset_slice(p, stride, H), _offset_slice(q, stride, W)]
            gx += np.einsum("bohw,co->bchw", g, w[:, :, p, q])
            gw[:, :, p, q] = np.einsum("bchw,bohw->co", x, g)
    gb = gy.sum(axis=(0, 2, 3)) if has_bias else None
    return gx, gw, gb


# --------------------------------------------------------------------------------------------
# tdBN (threshold-dependent batch norm, Zheng et al. 2021) on x viewed as (M, C, S):
# M = T*N rows, C channels, S = H*W positions. Statistics per channel over M and S, that is
# over batch, space and time together; n = M*S values per channel.
#   xhat = (x - mean) / sqrt(var + eps)          (var biased: divided by n)
#   y    = scale * gamma * xhat + beta,           scale = alpha * Vth
# --------------------------------------------------------------------------------------------


def tdbn_forward_train(x, gamma, beta, scale, eps):
    """x (M, C, S) -> (y, xhat, invstd, mean, var) with batch statistics (var biased)."""
    mean = x.mean(axis=(0, 2))
    var = ((x - mean[None, :, None]) ** 2).mean(axis=(0, 2))
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean[None, :, None]) * invstd[None, :, None]
    y = (scale * gamma)[None, :, None] * xhat + beta[None, :, None]
    return y, xhat, invstd.astype(x.dtype), mean, var


def tdbn_forward_eval(x, gamma, beta, scale, running_mean, running_var, eps):
    """Same map with the running statistics as constants: -> (y, xhat, invstd)."""
    invstd = (1.0 / np.sqrt(running_var + eps)).astype(x.dtype)
    xhat = (x - running_mean.astype(x.dtype)[None, :, None]) * invstd[None, :, None]
    y = (scale * gamma)[None, :, None] * xhat + beta[None, :, None]
    return y, xhat, invstd


def tdbn_backward_train(gy, xhat, invstd, gamma, scale):
    """Backward through batch statistics.

    With g = dL/dxhat = scale * gamma * gy and n values per channel,
        dL/dx = invstd / n * (n g - sum(g) - xhat * sum(g xhat)),
        dL/dgamma = scale * sum(gy xhat),   dL/dbeta = sum(gy).
    """
    n = gy.shape[0] * gy.shape[2]
    gbeta = gy.sum(axis=(0, 2))
    gamma_grad = (gy * xhat).sum(axis=(0, 2))
    g_scale = (scale * gamma * invstd)[None, :, None]
    gx = g_scale / n * (n * gy - gbeta[None, :, None] - xhat * gamma_grad[None, :, None])
    return gx, scale * gamma_grad, gbeta


def tdbn_backward_eval(gy, xhat, invstd, gamma, scale):
    """Backward with constant statistics: dL/dx = gy * scale * gamma * invstd."""
    gx = gy * (scale * gamma * invstd)[None, :, None]
    return gx, scale * (gy * xhat).sum(axis=(0, 2)), gy.sum(axis=(0, 2))


# --------------------------------------------------------------------------------------------
# Multi-step LIF neuron, x viewed as (T, M):
#   u_t = tau * u_{t-1} * (1 - o_{t-1}) + x_t,   u_0 = o_0 = 0
#   o_t = H(u_t - Vth)           spiking mode (strictly greater than Vth)
#   o_t = h(u_t)                 smooth stand-in mode, h(u) = clip((u - c) / (2 aa) + 1/2, 0, 1)
# The surrogate derivative of a spike is h'(u) = 1[|u - c| < aa] / (2 aa); c is the centre of
# the window: 0 in the official code (a quirk) or Vth.  The stand-in's exact derivative is the
# surrogate, so finite differences through the stand-in check the hand-written BPTT.
# --------------------------------------------------------------------------------------------


def lif_forward(x, vth, tau, aa, center, smooth):
    """x (T, M) -> (o, u): outputs and membrane potentials before reset, both (T, M)."""
    T = x.shape[0]
    u = np.empty_like(x)
    o = np.empty_like(x)
    u_prev = np.zeros_like(x[0])
    o_prev = np.zeros_like(x[0])
    for t in range(T):
        u[t] = tau * u_prev * (1.0 - o_prev) + x[t]
        if smooth:
            o[t] = np.clip((u[t] - center) / (2.0 * aa) + 0.5, 0.0, 1.0)
        else:
            o[t] = (u[t] > vth).astype(x.dtype)
        u_prev, o_prev = u[t], o[t]
    return o, u


def lif_step(x_t, u_prev, o_prev, vth, tau):
    """One spiking step with carried state, x_t, u_prev, o_prev (M,) -> (o_t, u_t).

    The same arithmetic as one iteration of ``lif_forward``: running a layer step by step
    (incremental generation) reproduces the full-sequence result exactly.
    """
    u = tau * u_prev * (1.0 - o_prev) + x_t
    return (u > vth).astype(x_t.dtype), u


def lif_backward(go, u, o, tau, aa, center, detach_reset):
    """BPTT through ``lif_forward``. Walking t = T-1 .. 0 with gu_T = 0:
        total dL/do_t = go_t - tau * u_t * gu_{t+1}         (reset path; dropped if detached)
        gu_t          = total dL/do_t * h'(u_t) + tau * (1 - o_t) * gu_{t+1}
        dL/dx_t       = gu_t
    """
    T = go.shape[0]
    gx = np.empty_like(go)
    gu_next = np.zeros_like(go[0])
    for t in range(T - 1, -1, -1):
        go_total = go[t] if detach_reset else go[t] - tau * u[t] * gu_next
        surrogate = (np.abs(u[t] - center) < aa).astype(go.dtype) / (2.0 * aa)
        gu = go_total * surrogate + tau * (1.0 - o[t]) * gu_next
        gx[t] = gu
        gu_next = gu
    return gx


# --------------------------------------------------------------------------------------------
# tdBN followed by LIF as one operation, x (T, N, C, S) time first, channel axis 2:
#   y = scale * gamma_c * xhat + beta_c,   xhat = (x - mean_c) * invstd_c,   o = LIF(y)
# Only x (the input) and the statistics are kept for backward: xhat, y and the membrane
# potentials u are recomputed there from x (the same arithmetic, so the same values). That is
# what makes the fused form light: the unfused layers keep xhat (tdBN) and u and o (LIF) until
# backward; this one keeps x only.
# --------------------------------------------------------------------------------------------


def _bn_lif_recompute(x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth):
    """x (T, N, C, S) -> (xhat (T*N, C, S), o, u (T, N*C*S)) with the given statistics."""
    T, N, C, S = x.shape
    x3 = x.reshape(T * N, C, S)
    xhat = (x3 - mean[None, :, None]) * invstd[None, :, None]
    y = (scale * gamma)[None, :, None] * xhat + beta[None, :, None]
    o, u = lif_forward(y.reshape(T, -1), vth, tau, aa, center, smooth)
    return xhat, o, u


def tdbn_lif_forward_train(x, gamma, beta, scale, eps, vth, tau, aa, center, smooth):
    """x (T, N, C, S) -> (o (T, N, C, S), mean, var, invstd) with batch statistics over T, N, S."""
    T, N, C, S = x.shape
    _, _, invstd, mean, var = tdbn_forward_train(x.reshape(T * N, C, S), gamma, beta, scale, eps)
    _, o, _ = _bn_lif_recompute(x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth)
    return o.reshape(x.shape), mean, var, invstd


def tdbn_lif_forward_eval(x, gamma, beta, scale, running_mean, running_var, eps, vth, tau, aa,
                          center, smooth):
    """x (T, N, C, S) -> (o, mean, invstd) with the running statistics as constants."""
    mean = running_mean.astype(x.dtype)
    invstd = (1.0 / np.sqrt(running_var + eps)).astype(x.dtype)      # as tdbn_forward_eval
    _, o, _ = _bn_lif_recompute(x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth)
    return o.reshape(x.shape), mean, invstd


def compose_block_eval(conv_transpose, bn_lif_eval, x, w, b, stride, padding, output_padding,
                       *bn_lif_args):
    """A decoder block in eval mode from a backend's own two kernels: ``conv_transpose``
    (conv_transpose2d_forward) on x (T, N, C_in, H, W) folded to (T*N, ...), then
    ``bn_lif_eval`` (tdbn_lif_forward_eval) -> spikes (T, N, C_out, Ho, Wo)."""
    T, N = x.shape[:2]
    y = conv_transpose(x.reshape(T * N, *x.shape[2:]), w, b, stride, padding, output_padding)
    C, Ho, Wo = y.shape[1:]
    o = bn_lif_eval(y.reshape(T, N, C, Ho * Wo), *bn_lif_args)[0]
    return o.reshape(T, N, C, Ho, Wo)


def compose_linear_step_eval(linear_t, bn_eval, step, x, wt, b, gamma, beta, scale, running_mean,
                             running_var, eps, vth, tau, u_prev, o_prev):
    """One eval step of a spiking linear block from a backend's own kernels: ``linear_t``
    (x wt + b, wt the weight transposed) on x (N, F_in), then ``bn_eval`` (tdbn_forward_eval)
    on y as (N, F_out, 1), then ``step`` (lif_step) -> (o, u) (N, F_out)."""
    y = linear_t(x, wt, b)
    N, F_out = y.shape
    y = bn_eval(y.reshape(N, F_out, 1), gamma, beta, scale, running_mean, running_var, eps)[0]
    o, u = step(y.reshape(-1), u_prev.reshape(-1), o_prev.reshape(-1), vth, tau)
    return o.reshape(N, F_out), u.reshape(N, F_out)


def linear_tdbn_lif_step_eval(x, wt, b, gamma, beta, scale, running_mean, running_var, eps, vth,
                              tau, u_prev, o_prev):
    """One time step of a spiking linear block in eval mode, for step-by-step generation:
    x (N, F_in) and the weight transposed, wt (F_in, F_out), b (F_out,) or None; tdBN's gamma,
    beta and running statistics (F_out,); the LIF state u_prev, o_prev (N, F_out) ->

        y = x wt + b,   (o, u) = lif_step(tdBN(y) with the running statistics, u_prev, o_prev)

    No backward: eval mode only (backends may fuse it; the values are those of the three
    kernels, y up to the order of its additions). wt rather than w: a caller that steps
    many times transposes the weight once."""
    return compose_linear_step_eval(lambda x_, wt_, b_: linear_forward(x_, wt_.T, b_),
                                    tdbn_forward_eval, lif_step, x, wt, b, gamma, beta, scale,
                                    running_mean, running_var, eps, vth, tau, u_prev, o_prev)


def conv_transpose2d_tdbn_lif_forward_eval(x, w, b, stride, padding, output_padding, gamma, beta,
                                           scale, running_mean, running_var, eps, vth, tau, aa,
                                           center, smooth):
    """A spiking decoder block in eval mode: x (T, N, C_in, H, W) -> spikes o (T, N, C_out,
    Ho, Wo) = LIF(tdBN with the running statistics(conv_transpose2d(x))). No backward: eval
    mode only (backends may fuse it; the values are those of the two kernels)."""
    return compose_block_eval(conv_transpose2d_forward, tdbn_lif_forward_eval, x, w, b, stride,
                              padding, output_padding, gamma, beta, scale, running_mean,
                              running_var, eps, vth, tau, aa, center, smooth)


def conv_transpose2d_tdbn_lif_membrane_eval(x, w, b, stride, padding, output_padding, gamma,
                                            beta, scale, running_mean, running_var, eps, vth,
                                            tau, aa, center, smooth, decay):
    """The decoder block's spikes o (T, N, C_out, Ho, Wo) in eval mode, summed over time as the
    membrane output does: sum_t decay^(T-1-t) o_t (N, C_out, Ho, Wo). A linear read-out
    layer followed by the membrane output equals the read-out of this sum (its bias times
    sum_t decay^(T-1-t)), so the spikes need not be stored (backends may fuse it)."""
    o = conv_transpose2d_tdbn_lif_forward_eval(x, w, b, stride, padding, output_padding, gamma,
                                               beta, scale, running_mean, running_var, eps, vth,
                                               tau, aa, center, smooth)
    return membrane_forward(o, decay)


def tdbn_lif_backward(go, x, mean, invstd, gamma, beta, scale, vth, tau, aa, center, smooth,
                      detach_reset, batch_stats):
    """BPTT through the LIF (``lif_backward``), then through tdBN: with batch statistics
    (``tdbn_backward_train``) or constant ones (``tdbn_backward_eval``).
    go, x (T, N, C, S) -> (gx (T, N, C, S), dL/dgamma, dL/dbeta)."""
    T, N, C, S = x.shape
    xhat, o, u = _bn_lif_recompute(x, mean, invstd, gamma, beta, scale, vth, tau, aa, center,
                                   smooth)
    gy = lif_backward(go.reshape(T, -1), u, o, tau, aa, center, detach_reset)
    backward = tdbn_backward_train if batch_stats else tdbn_backward_eval
    gx, ggamma, gbeta = backward(gy.reshape(T * N, C, S), xhat, invstd, gamma, scale)
    return gx.reshape(x.shape), ggamma, gbeta

# --------------------------------------------------------------------------------------------
# PSP filter (first-order synapse), x viewed as (T, M):
#   syn_t = syn_{t-1} + (x_t - syn_{t-1}) / tau_s,  syn_{-1} = 0
# Backward: gs_t = gy_t + (1 - 1/tau_s) gs_{t+1},  dL/dx_t = gs_t / tau_s.
# --------------------------------------------------------------------------------------------


def psp_forward(x, tau_s):
    y = np.empty_like(x)
    syn = np.zeros_like(x[0])
    for t in range(x.shape[0]):
        syn = syn + (x[t] - syn) / tau_s
        y[t] = syn
    return y


def psp_backward(gy, tau_s):
    gx = np.empty_like(gy)
    gs = np.zeros_like(gy[0])
    for t in range(gy.shape[0] - 1, -1, -1):
        gs = gy[t] + (1.0 - 1.0 / tau_s) * gs
        gx[t] = gs / tau_s
    return gx


# --------------------------------------------------------------------------------------------
# Membrane-potential output layer: an integrate-only neuron that never fires.
#   y = sum_t decay^(T-1-t) x_t,  x (T, M) -> y (M,);  dL/dx_t = decay^(T-1-t) gy
# --------------------------------------------------------------------------------------------


def membrane_coefficients(T, decay, dtype):
    return (decay ** (T - 1 - np.arange(T, dtype=np.float64))).astype(dtype)


def membrane_forward(x, decay):
    coef = membrane_coefficients(x.shape[0], decay, x.dtype)
    return np.tensordot(coef, x, axes=(0, 0))


def membrane_backward(gy, T, decay):
    coef = membrane_coefficients(T, decay, gy.dtype)
    return coef[:, None] * gy[None, :]


def tdbn_lif_membrane_forward_train(x, gamma, beta, scale, eps, vth, tau, aa, center, smooth,
                                    decay):
    """tdBN (batch statistics) -> LIF on x (T, N, C, S), its spikes summed over time by the
    membrane output: (sum_t decay^(T-1-t) o_t (N, C, S), mean, var, invstd). The spikes o
    themselves are not returned (the read-out of FSVAE and ESVAE needs only their sum)."""
    o, mean, var, invstd = tdbn_lif_forward_train(x, gamma, beta, scale, eps, vth, tau, aa,
                                                  center, smooth)
    T = x.shape[0]
    return membrane_forward(o.reshape(T, -1), decay).reshape(x.shape[1:]), mean, var, invstd


def tdbn_lif_membrane_backward(g, x, mean, invstd, gamma, beta, scale, vth, tau, aa, center,
                               smooth, detach_reset, decay):
    """Gradients of ``tdbn_lif_membrane_forward_train`` for g = dL/d(sum) (N, C, S): the
    spikes' gradient at step t is decay^(T-1-t) g, then ``tdbn_lif_backward`` (batch
    statistics) -> (gx (T, N, C, S), dL/dgamma, dL/dbeta)."""
    T = x.shape[0]
    go = membrane_backward(g.reshape(-1), T, decay).reshape(x.shape)
    return tdbn_lif_backward(go, x, mean, invstd, gamma, beta, scale, vth, tau, aa, center,
                             smooth, detach_reset, True)


# --------------------------------------------------------------------------------------------
# Spikes kept for backward as bytes: a weighted layer saves its input for the weight gradient,
# and when that input is spikes (every value 0 or 1) one byte per value holds it exactly, a
# quarter of float32's memory.
# --------------------------------------------------------------------------------------------


def pack_spikes(x):
    """x (any shape, float) -> the same values as uint8 when every value is 0 or 1, else None."""
    if not np.all((x == 0) | (x == 1)):
        return None
    return x.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Adam / AdamW parameter update (PyTorch's equations), in place on p, exp_avg, exp_avg_sq:
#   decoupled (AdamW):  p <- p (1 - lr wd)           L2 (Adam):  g <- g + wd p
#   m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
#   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
# --------------------------------------------------------------------------------------------


def adam_update(p, g, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """One Adam(W) step at 1-based ``step``; every array has p's shape and dtype."""
    if weight_decay and decoupled:
        p *= 1 - lr * weight_decay
    elif weight_decay:
        g = g + weight_decay * p
    exp_avg *= beta1
    exp_avg += (1 - beta1) * g
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g
    denom = np.sqrt(exp_avg_sq) / np.sqrt(1 - beta2 ** step) + eps
    p -= lr / (1 - beta1 ** step) * exp_avg / denom
