"""numba.cuda kernels: the same names and signatures as ``numpy_ref`` and ``cpu``.

Importing this package needs no GPU (numba compiles a kernel at its first launch); calling a
kernel where numba finds none raises ``launch.CudaUnavailableError`` saying what to do. Every
kernel takes NumPy arrays (results come back to the host) or device arrays (results stay on
the device, nothing is copied). The tests run them all in the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) against the CPU kernels, and on a GPU where there is one.

    launch.py     device checks, host/device helpers, launch sizes (grid-stride loops)
    gemm.py       the shared-memory tiled matrix product every contraction uses
    conv.py       linear, conv2d, conv_transpose2d (implicit GEMMs: no patch matrix)
    reduce.py     the shared-memory tree of every block reduction; per-channel sums (one
                  block per channel, float64) and the kernels of reductions over any axes
    batchnorm.py  tdBN and the fused tdBN -> LIF
    blocks.py     a decoder block in eval mode (transposed conv, then tdBN -> LIF), and
                  summed over time for the read-out; one eval step of a spiking linear
    neuron.py     LIF (one thread per neuron walking time), PSP, membrane output
    spikes.py     spikes kept for backward as bytes, one thread per value
    optim.py      the Adam(W) update, one thread per parameter

The tensors of a model moved to the GPU (``Module.to_device("cuda")``) are ``DeviceArray``s,
NumPy duck arrays whose operations run here too:

    array.py            DeviceArray (C-contiguous views, indexing, operators), asdevice,
                        empty/full, add_at_along_axis
    array_ufuncs.py     NumPy ufuncs (np.exp(a), a * b, out=, reductions, matmul)
    array_functions.py  NumPy functions (np.where, np.concatenate, np.transpose, ...)
    elementwise.py      map, binary and where kernels (one thread per element, broadcasting
                        by strides)
    reduce_axes.py      sums, means, max and min over any axes (launch plans)
    along_axis.py       np.take_along_axis and its adjoint, the scatter-add
"""
from ..numpy_ref import conv_out_size, conv_transpose_out_size  # noqa: F401
from .batchnorm import (tdbn_backward_eval, tdbn_backward_train, tdbn_forward_eval,  # noqa: F401
                        tdbn_forward_train, tdbn_lif_backward, tdbn_lif_forward_eval,
                        tdbn_lif_forward_train, tdbn_lif_membrane_backward,
                        tdbn_lif_membrane_forward_train)
from .blocks import (conv_transpose2d_tdbn_lif_forward_eval,  # noqa: F401
                     conv_transpose2d_tdbn_lif_membrane_eval, linear_tdbn_lif_step_eval)
from .conv import (conv2d_backward, conv2d_forward, conv_transpose2d_backward,  # noqa: F401
                   conv_transpose2d_forward, linear_backward, linear_delta_into,
                   linear_forward)
from .neuron import (lif_backward, lif_forward, lif_step, membrane_backward,  # noqa: F401
                     membrane_forward, psp_backward, psp_forward)
from .optim import adam_update  # noqa: F401
from .spikes import pack_spikes  # noqa: F401
