"""CUDA C source of the CuPy backend's fused kernels, one template per kernel family.

Each kernel is declared once here (name, template parameters, C parameter list,
body; the convolution and pooling kernels in ``conv_source``) and instantiated for
float and double (and, where it applies, each fused activation). ``SOURCE`` is
compiled by CuPy's RawModule at run time (NVRTC) and by the test suite offline (NVRTC
and ``nvcc --ptx``). The parameter lists also tell the launchers how to pass Python
numbers (``T`` is the array dtype).

Rule for every kernel: a thread's work is independent of every other thread (no
shared memory, no barriers, no warp shuffles, no atomics). Sums over the batch
are written as per-thread partial sums in a fixed order and finished by a second
kernel or a CuPy reduction, so results are deterministic, and the test suite can
run the same source on the CPU by looping over blocks and threads.

Arithmetic follows the reference formulas in ``fastnn/ops.py`` and
``fastnn/activations/`` (each spec's own file) step by step, and the module is compiled with
``-fmad=false`` so no multiply-add is contracted: elementwise results round like
NumPy's, apart from the last-bit differences of exp/tanh/log.
"""

import re
from collections import namedtuple

from .. import activation_codes as codes
from . import conv_source

# Fused activations: the template argument ACT of the activation kernels is the
# activation's code in ``activation_codes`` (softmax has kernels of its own). Each
# spec's ``cuda_forward``/``cuda_backward`` expression becomes one line of
# ``act_forward``/``act_backward``, its ``cuda_helpers`` part of the prelude.
SPECS = {name: codes.SPEC_OF[codes.CODES[name]] for name in codes.ELEMENTWISE
         if codes.SPEC_OF[codes.CODES[name]].cuda_forward}
ACTIVATIONS = {name: codes.CODES[name] for name in SPECS}
DIFFERENTIABLE = tuple(name for name in codes.DIFFERENTIABLE
                       if name in SPECS and SPECS[name].cuda_backward)
TYPES = {"float32": "float", "float64": "double"}
OPTIONS = ("--std=c++14", "-fmad=false")

PRELUDE = "".join(f"#define ACT_{name.upper()} {code}\n" for name, code in ACTIVATIONS.items())
PRELUDE += r"""

__device__ __forceinline__ float fn_exp(float x) { return expf(x); }
__device__ __forceinline__ double fn_exp(double x) { return exp(x); }
__device__ __forceinline__ float fn_log(float x) { return logf(x); }
__device__ __forceinline__ double fn_log(double x) { return log(x); }
__device__ __forceinline__ float fn_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double fn_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float fn_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double fn_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float fn_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double fn_sqrt(double x) { return sqrt(x); }
/* below this logit exp(-z) would overflow; the sigmoid there is under the smallest
   normal float anyway (activations.stable_sigmoid) */
__device__ __forceinline__ float sigmoid_floor(float) { return -87.0f; }
__device__ __forceinline__ double sigmoid_floor(double) { return -708.0; }

/* max(a, b) that keeps a NaN in a, like NumPy's maximum */
template <typename T> __device__ __forceinline__ T keep_max(T a, T b) {
    return a < b ? b : a;
}

template <typename T> __device__ __forceinline__ T stable_sigmoid(T z) {
    return T(1) / (T(1) + fn_exp(-keep_max(z, sigmoid_floor(z))));
}
"""
PRELUDE += "".join(spec.cuda_helpers for spec in SPECS.values())
PRELUDE += (
    "\ntemplate <typename T, int ACT> __device__ __forceinline__ T act_forward(T z, T alpha) {\n"
    + "".join(f"    if (ACT == ACT_{name.upper()}) return {spec.cuda_forward};\n"
              for name, spec in SPECS.items())
    + "    return z;\n}\n\n"
    "/* dA * f'(z), given z and a = f(z); alpha2 is 1 - alpha (rounded like the reference) */\n"
    "template <typename T, int ACT>\n"
    "__device__ __forceinline__ T act_backward(T dA, T z, T a, T alpha, T alpha2) {\n"
    + "".join(f"    if (ACT == ACT_{name.upper()}) return {SPECS[name].cuda_backward};\n"
              for name in DIFFERENTIABLE)
    + "    return dA;\n}\n\n"
)
PRELUDE += r"""/* the gradient with L2 weight decay added (ops._decayed) */
template <typename T> __device__ __forceinline__ T decayed(T g, T p, T decay) {
    return decay != T(0) ? g + decay * p : g;
}

#define THREAD_INDEX ((long long)blockIdx.x * blockDim.x + threadIdx.x)
#define THREAD_COUNT ((long long)gridDim.x * blockDim.x)
"""

Kernel = namedtuple("Kernel", "name template params body")

ACT_TEMPLATE = "typename T, int ACT"
TYPE_TEMPLATE = "typename T"

KERNELS = {k.name: k for k in (
    Kernel(
        "bias_act_forward", ACT_TEMPLATE,
        "T* Z, const T* b, T* A, long long m, long long n, T alpha",
        """
    for (long long i = THREAD_INDEX; i < m * n; i += THREAD_COUNT) {
        T z = Z[i] + b[i % n];
        Z[i] = z;
        if (ACT != ACT_IDENTITY) A[i] = act_forward<T, ACT>(z, alpha);
    }""",
    ),
    Kernel(
        "bias_softmax_forward", TYPE_TEMPLATE,
        "T* Z, const T* b, T* A, long long m, long long n",
        """
    for (long long r = THREAD_INDEX; r < m; r += THREAD_COUNT) {
        T* z = Z + r * n;
        T* a = A + r * n;
        T top = z[0] + b[0];
        for (long long j = 0; j < n; ++j) {
            z[j] = z[j] + b[j];
            top = keep_max(top, z[j]);
        }
        T total = T(0);
        for (long long j = 0; j < n; ++j) {
            a[j] = fn_exp(z[j] - top);
            total += a[j];
        }
        for (long long j = 0; j < n; ++j) a[j] = a[j] / total;
    }""",
    ),
    Kernel(
        "softmax_forward", TYPE_TEMPLATE,
        "const T* Z, T* A, long long m, long long n",
        """
    /* row r: a = exp(z - max) / sum, Z only read (the activation on its own) */
    for (long long r = THREAD_INDEX; r < m; r += THREAD_COUNT) {
        const T* z = Z + r * n;
        T* a = A + r * n;
        T top = z[0];
        for (long long j = 1; j < n; ++j) top = keep_max(top, z[j]);
        T total = T(0);
        for (long long j = 0; j < n; ++j) {
            a[j] = fn_exp(z[j] - top);
            total += a[j];
        }
        for (long long j = 0; j < n; ++j) a[j] = a[j] / total;
    }""",
    ),
    Kernel(
        "softmax_backward", TYPE_TEMPLATE,
        "const T* dA, const T* A, T* dZ, long long m, long long n",
        """
    /* row r: the Jacobian-vector product dZ = a * (dA - sum(dA * a)) */
    for (long long r = THREAD_INDEX; r < m; r += THREAD_COUNT) {
        const T* da = dA + r * n;
        const T* a = A + r * n;
        T inner = T(0);
        for (long long j = 0; j < n; ++j) inner += da[j] * a[j];
        for (long long j = 0; j < n; ++j) dZ[r * n + j] = a[j] * (da[j] - inner);
    }""",
    ),
    Kernel(
        "act_backward_partial", ACT_TEMPLATE,
        "const T* dA, const T* Z, const T* A, T* dZ, T* partial, long long m, long long n, "
        "long long rows, T alpha, T alpha2",
        """
    /* thread (chunk c, column j): dZ for rows [c*rows, (c+1)*rows) of column j and
       their sum; consecutive threads take consecutive columns (coalesced) */
    long long chunks = (m + rows - 1) / rows;
    for (long long t = THREAD_INDEX; t < chunks * n; t += THREAD_COUNT) {
        long long j = t % n, c = t / n;
        long long stop = (c + 1) * rows < m ? (c + 1) * rows : m;
        T sum = T(0);
        for (long long r = c * rows; r < stop; ++r) {
            long long i = r * n + j;
            T g = act_backward<T, ACT>(dA[i], Z[i], A[i], alpha, alpha2);
            if (ACT != ACT_IDENTITY) dZ[i] = g;
            sum += g;
        }
        partial[c * n + j] = sum;
    }""",
    ),
    Kernel(
        "column_sum", TYPE_TEMPLATE,
        "const T* partial, T* out, long long chunks, long long n",
        """
    for (long long j = THREAD_INDEX; j < n; j += THREAD_COUNT) {
        T sum = T(0);
        for (long long c = 0; c < chunks; ++c) sum += partial[c * n + j];
        out[j] = sum;
    }""",
    ),
    Kernel(
        "softmax_xent_rows", TYPE_TEMPLATE,
        "const T* Z, const T* A, const T* Y, T* dZ, T* row_loss, long long m, long long n, "
        "int need_grad",
        """
    /* row r: sum_j y_j * log_softmax(z)_j from the shifted logits; dZ = (a - y) / m */
    for (long long r = THREAD_INDEX; r < m; r += THREAD_COUNT) {
        const T* z = Z + r * n;
        const T* y = Y + r * n;
        T top = z[0];
        for (long long j = 1; j < n; ++j) top = keep_max(top, z[j]);
        T total = T(0);
        for (long long j = 0; j < n; ++j) total += fn_exp(z[j] - top);
        T log_total = fn_log(total);
        T loss = T(0);
        for (long long j = 0; j < n; ++j) loss += y[j] * ((z[j] - top) - log_total);
        row_loss[r] = loss;
        if (need_grad) {
            for (long long j = 0; j < n; ++j) {
                dZ[r * n + j] = (A[r * n + j] - y[j]) / T(m);
            }
        }
    }""",
    ),
    Kernel(
        "sigmoid_bce_partial", TYPE_TEMPLATE,
        "const T* Z, const T* A, const T* Y, T* dZ, T* partial, long long size, int need_grad",
        """
    /* max(z, 0) - z*y + log1p(exp(-|z|)) summed per thread; dZ = (a - y) / size */
    T sum = T(0);
    for (long long i = THREAD_INDEX; i < size; i += THREAD_COUNT) {
        T z = Z[i];
        T absz = z < T(0) ? -z : z;
        sum += (keep_max(z, T(0)) - z * Y[i]) + fn_log1p(fn_exp(-absz));
        if (need_grad) dZ[i] = (A[i] - Y[i]) / T(size);
    }
    partial[THREAD_INDEX] = sum;""",
    ),
    Kernel(
        "sgd_update", TYPE_TEMPLATE,
        "T* p, const T* g, long long size, T lr, T weight_decay",
        """
    for (long long i = THREAD_INDEX; i < size; i += THREAD_COUNT) {
        T gi = decayed(g[i], p[i], weight_decay);
        p[i] = p[i] - lr * gi;
    }""",
    ),
    Kernel(
        "momentum_update", TYPE_TEMPLATE,
        "T* p, const T* g, T* v, long long size, T lr, T momentum, T weight_decay, int nesterov",
        """
    /* classical: p += v; Nesterov's look-ahead: p += momentum*v - lr*g */
    for (long long i = THREAD_INDEX; i < size; i += THREAD_COUNT) {
        T gi = decayed(g[i], p[i], weight_decay);
        T vi = v[i] * momentum;
        vi = vi - lr * gi;
        v[i] = vi;
        p[i] = nesterov ? p[i] + (momentum * vi - lr * gi) : p[i] + vi;
    }""",
    ),
    Kernel(
        "rmsprop_update", TYPE_TEMPLATE,
        "T* p, const T* g, T* h, long long size, T lr, T rho, T rho2, T eps, T weight_decay",
        """
    /* rho2 = 1 - rho; AdaGrad's h += g^2 is rho = rho2 = 1 (multiplying by one is exact) */
    for (long long i = THREAD_INDEX; i < size; i += THREAD_COUNT) {
        T gi = decayed(g[i], p[i], weight_decay);
        T hi = h[i] * rho;
        hi = hi + rho2 * (gi * gi);
        h[i] = hi;
        p[i] = p[i] - lr * gi / (fn_sqrt(hi) + eps);
    }""",
    ),
    Kernel(
        "adam_update", TYPE_TEMPLATE,
        "T* p, const T* g, T* m, T* v, long long size, T lr, T beta1, T beta1c, T beta2, "
        "T beta2c, T fix1, T fix2, T eps, T weight_decay",
        """
    /* beta1c = 1 - beta1, beta2c = 1 - beta2, fix1 = 1 - beta1^t, fix2 = 1 - beta2^t */
    for (long long i = THREAD_INDEX; i < size; i += THREAD_COUNT) {
        T gi = decayed(g[i], p[i], weight_decay);
        T mi = m[i] * beta1;
        mi = mi + beta1c * gi;
        T vi = v[i] * beta2;
        vi = vi + beta2c * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        T m_hat = mi / fix1;
        T v_hat = vi / fix2;
        p[i] = p[i] - lr * m_hat / (fn_sqrt(v_hat) + eps);
    }""",
    ),
)}
KERNELS.update((spec[0], Kernel(*spec)) for spec in conv_source.KERNELS)
# kernels with an ACT parameter that take every elementwise activation (the others: the
# differentiable ones)
FORWARD_ACT = ("bias_act_forward", "conv_bias_act_forward")


def definition(kernel):
    """The CUDA C definition of one kernel template."""
    return (f"template <{kernel.template}>\n__global__ void {kernel.name}({kernel.params}) "
            f"{{{kernel.body}\n}}\n")


SOURCE = PRELUDE + "\n".join(definition(k) for k in KERNELS.values())


def instance(name, dtype_name, act=None):
    """The name expression of one instantiation, e.g. 'bias_act_forward<float, 3>'."""
    kernel = KERNELS[name]
    args = [TYPES[dtype_name]]
    if kernel.template == ACT_TEMPLATE:
        args.append(str(ACTIVATIONS[act]))
    return f"{name}<{', '.join(args)}>"


def instances():
    """Every instantiation the backend may launch (compiled together in one module)."""
    out = []
    for name, kernel in KERNELS.items():
        for dtype_name in TYPES:
            if kernel.template != ACT_TEMPLATE:
                out.append(instance(name, dtype_name))
                continue
            acts = ACTIVATIONS if name in FORWARD_ACT else DIFFERENTIABLE
            out += [instance(name, dtype_name, act) for act in acts]
    return out


def parameters(name):
    """[(C type, parameter name)] of a kernel, e.g. [('T*', 'Z'), ('long long', 'm')]."""
    out = []
    for piece in KERNELS[name].params.split(","):
        ctype, _, pname = piece.strip().rpartition(" ")
        out.append((ctype.replace("const ", ""), pname))
    return out


def signature(instance_name):
    """(kernel name, C type for T, C parameter list with T substituted) of an instance."""
    name, _, args = instance_name.partition("<")
    ctype = args.rstrip(">").split(",")[0].strip()
    return name, ctype, re.sub(r"\bT\b", ctype, KERNELS[name].params)


def explicit_instantiations():
    """C++ explicit instantiations of every instance, for offline compilers (nvcc)."""
    lines = []
    for inst in instances():
        _, _, params = signature(inst)
        lines.append(f"template __global__ void {inst}({params});")
    return "\n".join(lines) + "\n"
