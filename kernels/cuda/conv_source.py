"""CUDA C of the convolution and pooling kernels (NCHW, as ``fastnn.conv_ops``).

Each entry is (name, template parameters, C parameter list, body), made into a kernel
of ``source.KERNELS`` there and compiled with the others, under the same rules: a
thread's work is independent of every other thread's (no shared memory, atomics or
barriers), so the results are deterministic and the emulator in the test suite can
run them on the CPU. The activation helpers (``act_forward``, ``act_backward``) and
``THREAD_INDEX``/``THREAD_COUNT`` come from ``source.PRELUDE``.

A convolution is im2col, one cuBLAS GEMM and a fused bias + activation pass. The
columns are laid out (C*kh*kw, N*OH*OW), image-major along a row, so the forward is
one GEMM ``W (F, C*kh*kw) @ cols`` giving Z transposed, ``Zt`` (F, N*OH*OW), and the
backward's dW and dcols are one GEMM each. Sums that several threads would add into
one place (col2im, the pooling backwards) are gathers instead: one thread per input
element adds, in a fixed order, what every window holding it sends back. That order
is the generic op's (window offsets row-major), so col2im and the pooling backwards
give the generic op's bits for the same inputs.

NaN in max pooling: a window holding NaN gives NaN and its first NaN takes the
gradient (``x != x`` tests for NaN; the module is compiled without fast math).
"""

ACT = "typename T, int ACT"
TYPE = "typename T"
GEOMETRY = ("long long h, long long w, int kh, int kw, int sh, int sw, long long oh, "
            "long long ow")

KERNELS = (
    (
        "im2col", TYPE,
        "const T* X, T* cols, long long n, long long c, " + GEOMETRY + ", int top, int left",
        """
    /* cols[(ch, i, j), img * P + p]: the padded input under output position p */
    long long P = oh * ow, NP = n * P;
    for (long long t = THREAD_INDEX; t < c * kh * kw * NP; t += THREAD_COUNT) {
        long long q = t % NP, row = t / NP;
        long long img = q / P, p = q % P;
        long long y = (p / ow) * sh + (row / kw) % kh - top;
        long long x = (p % ow) * sw + row % kw - left;
        long long ch = row / (kh * kw);
        cols[t] = (y >= 0 && y < h && x >= 0 && x < w) ? X[((img * c + ch) * h + y) * w + x]
                                                       : T(0);
    }""",
    ),
    (
        "col2im", TYPE,
        "const T* dcols, T* dX, long long n, long long c, " + GEOMETRY + ", int top, int left",
        """
    /* dX[img, ch, y, x]: the sum of dcols over every (window offset, output position)
       that reads it, offsets in row-major order */
    long long P = oh * ow, NP = n * P;
    for (long long t = THREAD_INDEX; t < n * c * h * w; t += THREAD_COUNT) {
        long long yp = (t / w) % h + top, xp = t % w + left;
        long long ch = (t / (w * h)) % c, img = t / (w * h * c);
        T sum = T(0);
        for (int i = 0; i < kh && i <= yp; ++i) {
            if ((yp - i) % sh != 0 || (yp - i) / sh >= oh) continue;
            for (int j = 0; j < kw && j <= xp; ++j) {
                if ((xp - j) % sw != 0 || (xp - j) / sw >= ow) continue;
                long long row = (ch * kh + i) * kw + j;
                sum += dcols[row * NP + img * P + ((yp - i) / sh) * ow + (xp - j) / sw];
            }
        }
        dX[t] = sum;
    }""",
    ),
    (
        "conv_bias_act_forward", ACT,
        "const T* Zt, const T* b, T* Z, T* A, long long n, long long f, long long p, "
        "int write_z, T alpha",
        """
    /* Z[img, ch, p] = Zt[ch, img * p + p] + b[ch] (NCHW out), and A = f(Z) */
    for (long long t = THREAD_INDEX; t < n * f * p; t += THREAD_COUNT) {
        long long ch = (t / p) % f, img = t / (p * f);
        T z = Zt[(ch * n + img) * p + t % p] + b[ch];
        if (write_z) Z[t] = z;
        if (ACT != ACT_IDENTITY) A[t] = act_forward<T, ACT>(z, alpha);
    }""",
    ),
    (
        "conv_act_backward", ACT,
        "const T* dA, const T* Z, const T* A, T* dZt, long long n, long long f, long long p, "
        "T alpha, T alpha2",
        """
    /* dZt[ch, img * p + p] = dA * f'(Z) read at [img, ch, p]: dZ transposed for the GEMMs */
    for (long long t = THREAD_INDEX; t < n * f * p; t += THREAD_COUNT) {
        long long ch = t / (n * p), img = (t / p) % n;
        long long s = (img * f + ch) * p + t % p;
        dZt[t] = act_backward<T, ACT>(dA[s], Z[s], A[s], alpha, alpha2);
    }""",
    ),
    (
        "maxpool_forward", TYPE,
        "const T* X, T* out, int* arg, long long planes, " + GEOMETRY,
        """
    /* the first maximum of each window, row-major; a NaN beats every number and the
       first NaN stops the search; arg: its index y * w + x within the plane */
    for (long long t = THREAD_INDEX; t < planes * oh * ow; t += THREAD_COUNT) {
        const T* x = X + (t / (oh * ow)) * h * w;
        long long start = ((t / ow) % oh) * sh * w + (t % ow) * sw;
        long long pick = start;
        T best = x[pick];
        for (int k = 1; k < kh * kw && best == best; ++k) {
            long long at = start + (k / kw) * w + k % kw;
            if (x[at] > best || x[at] != x[at]) {
                best = x[at];
                pick = at;
            }
        }
        out[t] = best;
        arg[t] = (int)pick;
    }""",
    ),
    (
        "maxpool_backward", TYPE,
        "const T* dA, const int* arg, T* dX, long long planes, " + GEOMETRY,
        """
    /* dX[y, x]: the sum of dA over the windows that chose (y, x), offsets row-major */
    for (long long t = THREAD_INDEX; t < planes * h * w; t += THREAD_COUNT) {
        long long y = (t / w) % h, x = t % w, plane = (t / (h * w)) * oh * ow;
        T sum = T(0);
        for (int i = 0; i < kh && i <= y; ++i) {
            if ((y - i) % sh != 0 || (y - i) / sh >= oh) continue;
            for (int j = 0; j < kw && j <= x; ++j) {
                if ((x - j) % sw != 0 || (x - j) / sw >= ow) continue;
                long long o = plane + ((y - i) / sh) * ow + (x - j) / sw;
                if (arg[o] == (int)(y * w + x)) sum += dA[o];
            }
        }
        dX[t] = sum;
    }""",
    ),
    (
        "avgpool_forward", TYPE,
        "const T* X, T* out, long long planes, " + GEOMETRY,
        """
    /* the window's sum, row-major, over kh * kw */
    for (long long t = THREAD_INDEX; t < planes * oh * ow; t += THREAD_COUNT) {
        const T* x = X + (t / (oh * ow)) * h * w + ((t / ow) % oh) * sh * w + (t % ow) * sw;
        T sum = x[0];
        for (int k = 1; k < kh * kw; ++k) sum += x[(k / kw) * w + k % kw];
        out[t] = sum / T(kh * kw);
    }""",
    ),
    (
        "avgpool_backward", TYPE,
        "const T* dA, T* dX, long long planes, " + GEOMETRY,
        """
    /* dX[y, x]: the sum of dA / (kh * kw) over the windows holding (y, x) */
    for (long long t = THREAD_INDEX; t < planes * h * w; t += THREAD_COUNT) {
        long long y = (t / w) % h, x = t % w, plane = (t / (h * w)) * oh * ow;
        T sum = T(0);
        for (int i = 0; i < kh && i <= y; ++i) {
            if ((y - i) % sh != 0 || (y - i) / sh >= oh) continue;
            for (int j = 0; j < kw && j <= x; ++j) {
                if ((x - j) % sw != 0 || (x - j) / sw >= ow) continue;
                sum += dA[plane + ((y - i) / sh) * ow + (x - j) / sw] / T(kh * kw);
            }
        }
        dX[t] = sum;
    }""",
    ),
)
